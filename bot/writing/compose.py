"""Writing in slots: a poem line by line, a list item by item, each slot chosen from candidates.

The program owns the structure; the model fills it in. For each slot several candidates are
drawn in one batched call. Each candidate is cut where the form allows: at the end of a word
with the syllables the line needs, or, where the line must rhyme, ended on a rhyme word that
the model itself finds likely after it (its log-probability as the next token, which the engine
reports for the words we ask about). The options are scored by form, by fluency (the model's own
mean log-probability) and by the topic, and the best is kept before the next slot is written
with it in the prompt.

Promises: a poem has exactly its form's lines when the model wrote anything usable for each; a
line's syllables are in the form's range, and a rhyming line rhymes, whenever any option of up
to `ROUNDS` draws allowed it (otherwise the nearest option is kept, and `prosody.check` tells
what it misses). A list has `count` distinct items unless the model repeats itself through
every round. Nothing here is written by the program in the model's place except the rhyme word
it chose for a line: among words the model itself rated, or, on an engine that reports no
log-probabilities (a remote server), the most common word that fits.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from bot.generation.types import Cut, GenerationResult, Prompt, SamplingParams
from bot.prompts import prosody
from bot.prompts.prosody import FUNCTION_WORDS, METERS

log = logging.getLogger(__name__)

Draw = Callable[[Prompt, SamplingParams, int], Awaitable[list[GenerationResult]]]
Show = Callable[[str], Awaitable[object]]
# The server's reward model on candidate texts (higher: more to its taste); see `Drafts.rank`.
Rank = Callable[[list[str]], Awaitable[list[float]]]

# Candidates a slot; rounds before the nearest option is kept. Four rows cost about 1.5 times
# one on the 2-core dev CPU (a 135M model is bound by per-step overhead).
CANDIDATES = 4
ROUNDS = 3
FREE_VERSE_LINES = 8
# What the model may write next where a line ends well.
END_PROBES = ("\n", ",", ".", "!", "?", ";")
RHYME_POOL = 60
# Unknown for an appended rhyme word: whether the line could end after it.
_APPENDED_END = -2.5
# The reward model's say, in standard deviations among a round's options, against fluency and
# topic (a few tenths apart between good options): enough to reorder near equals, never to
# make a line that misses its form win (form comes first in `Option.rank`).
REWARD_WEIGHT = 1.0
RERANKED = 6  # options a round shows the reward model (one forward pass each)
_NOT_VERSE = re.compile(r"[0-9|#*@<>\[\]{}()_=/\\:]|http")


@dataclass(frozen=True, slots=True)
class Slot:
    """What one line must be: its syllables, its rhyme letter, its forced first letter."""

    low: int = 1
    high: int = 14
    rhyme: str = ""
    letter: str = ""


@dataclass(frozen=True, slots=True)
class Option:
    """One way to fill a slot, with whether it meets the form and how good it reads."""

    text: str
    fits: bool
    score: float

    @property
    def rank(self) -> tuple[bool, float]:
        return (self.fits, self.score)


def slots_for(form: str, word: str = "") -> list[Slot]:
    """The lines of `form` (a key of `METERS`, "acrostic" spelling `word`, or free verse)."""
    meter = METERS.get(form)
    if meter is not None:
        rhyme = meter.rhyme or " " * meter.lines
        pairs = zip(meter.syllables, rhyme, strict=True)
        return [Slot(low, high, letter.strip()) for (low, high), letter in pairs]
    if form == "acrostic":
        return [Slot(2, 12, letter=c) for c in word]
    return [Slot(3, 12)] * FREE_VERSE_LINES


def line_params(slot: Slot, pool: Sequence[str]) -> SamplingParams:
    """Sampling for one line's candidates: one line each, with the log-probabilities of line
    ends and of the rhyme words in `pool`."""
    return SamplingParams(
        # room for the syllables and a little more, to cut from; words are about 1.3 tokens
        max_new_tokens=min(36, round(slot.high * 1.4) + 4),
        temperature=0.9,
        top_p=0.95,
        repetition_penalty=1.15,
        stop=("\n",),
        logprobs=True,
        probes=END_PROBES + tuple(f" {w}" for w in pool),
    )


def content_words(text: str) -> set[str]:
    return {w.lower() for w in prosody.words(text) if len(w) > 2} - FUNCTION_WORDS


def _relevance(text: str, topic: set[str]) -> float:
    found = content_words(text)
    hits = sum(1 for t in topic if any(w.startswith(t[:5]) for w in found))
    return 0.4 * min(hits, 2)


def _repeats(text: str, earlier: Sequence[str]) -> bool:
    mine = content_words(text)
    for other in earlier:
        theirs = content_words(other)
        if text.strip().lower() == other.strip().lower():
            return True
        if mine and len(mine & theirs) / len(mine) > 0.6:
            return True
    return False


@lru_cache(maxsize=4096)
def _rhymes_known(word: str) -> int:
    """How many common words rhyme with `word`: a line that opens a rhyme needs a few."""
    return len(prosody.rhyme_words([word]))


def _answer(result: GenerationResult, prefix: str) -> str:
    """What the model wrote after `prefix` (an engine that cannot continue a prefix, such as a
    chat server, answers without it)."""
    return result.text[len(prefix) :] if result.text.startswith(prefix) else result.text


def _word_cuts(text: str) -> list[Cut]:
    """Cuts at every word end, for an engine that reports no log-probabilities."""
    return [Cut(0, m.end(), 0.0) for m in re.finditer(r"[\w'’]+[,.;!?]?", text)]


def _at_word_end(gen: str, end: int) -> bool:
    if end <= 0 or not gen[:end].strip():
        return False
    return end == len(gen) or not (gen[end].isalnum() or gen[end] in "'’")


def line_options(
    results: Sequence[GenerationResult],
    prefix: str,
    slot: Slot,
    *,
    pool: Sequence[str],
    group: Sequence[str],
    opens: bool,
    earlier: Sequence[str],
    topic: set[str],
) -> list[Option]:
    """The ways a draw's candidates can fill `slot`: each cut at a word end, or ended on a pool
    word."""
    options = []
    for result in results:
        gen = _answer(result, prefix)
        if result.cuts is None:  # an engine that did not stop at the line's end: its first line
            gen = gen.lstrip("\n").split("\n", 1)[0]
        cuts = list(result.cuts) if result.cuts is not None else _word_cuts(gen)
        for cut in cuts:
            if not _at_word_end(gen, cut.end):
                continue
            line = (slot.letter + gen[: cut.end]).strip()
            found = prosody.words(line)
            if not found or _NOT_VERSE.search(line) or _repeats(line, earlier):
                continue
            syllables = prosody.line_syllables(line)
            fluency = cut.logprob / max(cut.tokens, 1)
            ends = [v for v in cut.next[: len(END_PROBES)] if v is not None]
            end = math.log(sum(math.exp(v) for v in ends)) if ends else _APPENDED_END
            last = found[-1].lower()
            rhymed = not group or (
                last not in {g.lower() for g in group}
                and all(prosody.rhymes(last, g) for g in group)
            )
            fits = (
                slot.low <= syllables <= slot.high
                and rhymed
                and (not opens or _rhymes_known(last) >= 3)
                and last not in FUNCTION_WORDS
            )
            off = max(slot.low - syllables, syllables - slot.high, 0)
            score = fluency + _relevance(line, topic) + end / 2 - off
            options.append(Option(line, fits, score))
            if group and line[-1].isalnum():
                asked = result.cuts is not None
                options += _rhymed_endings(line, cut, syllables, slot, pool, topic, asked=asked)
    return options


def _rhymed_endings(
    line: str,
    cut: Cut,
    syllables: int,
    slot: Slot,
    pool: Sequence[str],
    topic: set[str],
    *,
    asked: bool,
) -> list[Option]:
    """`line` ended on each pool word that keeps its syllables in range, scored by the model's
    log-probability of that word next (`asked`: the engine reported it; else by the pool's
    order, most frequent first)."""
    options = []
    for index, word in enumerate(pool):
        probe = len(END_PROBES) + index
        logprob = cut.next[probe] if probe < len(cut.next) else None
        if asked and logprob is None:
            continue  # the model was not asked, or the word is not one token
        if not slot.low <= syllables + prosody.syllables(word) <= slot.high:
            continue
        fluent = (cut.logprob + logprob) / (cut.tokens + 1) if logprob is not None else -3 - index
        text = f"{line} {word}"
        options.append(Option(text, True, fluent + _relevance(text, topic) + _APPENDED_END / 2))
    return options


async def write_poem(
    draw: Draw,
    show: Show,
    prompt_for: Callable[[list[str], str], Prompt],
    slots: Sequence[Slot],
    topic: str,
    params_for: Callable[[Slot, Sequence[str]], SamplingParams] | None = None,
    rank: Rank | None = None,
) -> str:
    """Write `slots` one line at a time; `prompt_for(lines, letter)` is the prompt for the next
    line after `lines`, which the answer begins with `letter`; `params_for(slot, pool)` its
    sampling (by default `line_params`); `rank` the server's reward model, which sees the poem
    so far with each of the best options."""
    params_for = params_for or line_params
    lines: list[str] = []
    words = content_words(topic)
    for i, slot in enumerate(slots):
        group = [prosody.last_word(lines[j]) for j in range(i) if slot.rhyme == slots[j].rhyme]
        group = group if slot.rhyme else []
        used = {prosody.last_word(line).lower() for line in lines}
        pool = prosody.rhyme_words(group, avoid=used)[:RHYME_POOL] if group else []
        opens = bool(slot.rhyme) and not group and any(s.rhyme == slot.rhyme for s in slots[i:][1:])
        prompt = prompt_for(lines, slot.letter)
        params = params_for(slot, pool)
        best: Option | None = None
        for _ in range(ROUNDS):
            results = await draw(prompt, params, CANDIDATES)
            # scoring looks words up in the dictionary: off the event loop
            options = await asyncio.to_thread(
                line_options,
                results,
                prompt.prefix,
                slot,
                pool=pool,
                group=group,
                opens=opens,
                earlier=lines,
                topic=words,
            )
            if rank is not None:
                options = await reranked(options, rank, lambda o: "\n".join([*lines, o.text]))
            for option in options:
                if best is None or option.rank > best.rank:
                    best = option
            if best is not None and best.fits:
                break
        if best is None:
            break  # nothing usable three times over: the poem ends short, and says so
        lines.append(best.text)
        await show("\n".join(lines))
    return "\n".join(lines)


async def reranked(
    options: list[Option], rank: Rank, text_of: Callable[[Option], str]
) -> list[Option]:
    """`options`, the best `RERANKED` of them with the reward model's say added to their score
    (standardised among them). If the reward model fails, the options are kept as they were:
    it is one more opinion, never a reason to fail a poem."""
    best = sorted(options, key=lambda o: o.rank, reverse=True)[:RERANKED]
    if len(best) < 2:
        return options
    try:
        rewards = await rank([text_of(o) for o in best])
    except Exception:
        log.exception("the reward model failed; choosing without it")
        return options
    mean = sum(rewards) / len(rewards)
    spread = math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards)) or 1.0
    judged = {
        id(o): Option(o.text, o.fits, o.score + REWARD_WEIGHT * (r - mean) / spread)
        for o, r in zip(best, rewards, strict=True)
    }
    return [judged.get(id(o), o) for o in options]


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def list_item(text: str, *, sentences: int = 2, most_words: int = 45) -> str | None:
    """One idea from a candidate's line: its first `sentences` sentences, or None when it is
    empty, unfinished (no sentence end, cut off by the token limit), or a ramble."""
    text = text.strip().strip("\"'").strip()
    if not text:
        return None
    parts = _SENTENCE.split(text)
    kept = " ".join(parts[:sentences]).strip()
    if len(kept.split()) > most_words or len(prosody.words(kept)) < 1:
        return None
    return kept


async def write_list(
    draw: Draw,
    show: Show,
    prompt_for: Callable[[list[str]], Prompt],
    params: SamplingParams,
    count: int,
    topic: str,
    rank: Rank | None = None,
) -> list[str]:
    """`count` distinct items, drawn slot by slot; several good candidates of one draw may fill
    several slots. An item cut off by the token limit mid-sentence is not used. `rank` (the
    server's reward model) adds its say to each candidate's score."""
    items: list[str] = []
    words = content_words(topic)
    for _ in range(count + ROUNDS):
        if len(items) >= count:
            break
        prompt = prompt_for(items)
        options: list[tuple[float, str]] = []
        for result in await draw(prompt, params, CANDIDATES):
            gen = _answer(result, prompt.prefix)
            item = list_item(gen)
            if item is None or (result.finish_reason == "length" and item[-1] not in ".!?"):
                continue
            fluency = 0.0
            if result.cuts:
                within = [c for c in result.cuts if c.end <= len(gen.rstrip())]
                fluency = within[-1].logprob / max(within[-1].tokens, 1)
            options.append((fluency + _relevance(item, words), item))
        if rank is not None and options:
            judged = await reranked(
                [Option(i, True, s) for s, i in options], rank, lambda o: o.text
            )
            options = [(o.score, o.text) for o in judged]
        for _score, item in sorted(options, reverse=True):
            if len(items) < count and not _repeats(item, items):
                items.append(item)
        await show("\n".join(f"{i}. {item}" for i, item in enumerate(items, 1)))
    return items
