"""Prosody counted as a reader counts: known poems pass their form, near misses do not.

The fixtures are the project's own poems and public-domain ones (Lear, Shakespeare).
"""

from __future__ import annotations

import pytest

from bot.prompts import prosody

HAIKU = "Pink petals drifting\nsoft on the still temple pond\nspring breathes, then is gone"
HAIKU_2 = "Snow on the mailbox\nno letters since November\nthe red flag stays down"
TANKA = (
    "Your ink has faded\nthe folds worn soft as linen\nI read it again\n"
    "slowly, the way you spoke it\nas if the page could still hear"
)
LIMERICK = (
    "A cat with a taste for the cream\nwould plot and would purr and would scheme;\n"
    "she tipped the jug over,\nthen rolled in the clover,\nand blamed the whole mess on a dream."
)
LEAR = (
    "There was an Old Man with a beard,\nWho said, 'It is just as I feared!\n"
    "Two Owls and a Hen,\nFour Larks and a Wren,\nHave all built their nests in my beard!'"
)
SONNET_130 = """My mistress' eyes are nothing like the sun;
Coral is far more red than her lips' red;
If snow be white, why then her breasts are dun;
If hairs be wires, black wires grow on her head.
I have seen roses damask'd, red and white,
But no such roses see I in her cheeks;
And in some perfumes is there more delight
Than in the breath that from my mistress reeks.
I love to hear her speak, yet well I know
That music hath a far more pleasing sound;
I grant I never saw a goddess go;
My mistress, when she walks, treads on the ground:
   And yet, by heaven, I think my love as rare
   As any she belied with false compare."""


@pytest.mark.parametrize(
    ("poem", "form"),
    [
        (HAIKU, "haiku"),
        (HAIKU_2, "haiku"),
        (TANKA, "tanka"),
        (LIMERICK, "limerick"),
        (LEAR, "limerick"),
        (SONNET_130, "sonnet"),
    ],
)
def test_real_poems_meet_their_form(poem: str, form: str) -> None:
    verdict = prosody.check(poem, form)
    assert verdict.ok, verdict.misses


def test_near_misses_are_named() -> None:
    two_lines = prosody.check("Pink petals drifting\nsoft on the still temple pond", "haiku")
    assert two_lines.misses == ("2 lines, not 3",)
    long_middle = prosody.check(
        "Pink petals drifting\nsoft on the very still old temple pond\nspring breathes", "haiku"
    )
    assert long_middle.syllables == (5, 10, 2)
    assert long_middle.misses == ("line 2: 10 syllables, not 7", "line 3: 2 syllables, not 5")
    no_rhyme = prosody.check(LIMERICK.replace("dream.", "nap."), "limerick")
    assert no_rhyme.misses == ("rhymes AABBC, not AABBA",)
    # the same word at the end of every line is repetition, not rhyme
    same = "\n".join(["a cat sat on a mat by the cat"] * 2 + ["the cat", "a cat", "the cat"])
    assert "rhymes" in " ".join(prosody.check(same, "limerick").misses)
    prose = prosody.check(
        "\n".join(["The weather was fine and we went for a walk."] * 14), "sonnet"
    )
    assert not prose.ok


def test_acrostic_and_free_verse() -> None:
    moon = "Midnight lifts its silver lamp\nOver the roofs\nOwls trace its arc\nNight keeps it"
    assert prosody.check(moon, "acrostic", word="moon").ok
    assert prosody.check(moon, "acrostic", word="mood").misses == ("spells MOON, not MOOD",)
    assert prosody.check("one\ntwo\nthree", "free_verse").misses == ("3 lines, not 6 to 10",)


def test_syllables_and_rhymes_of_words() -> None:
    counts = {"candle": 2, "evening": 2, "the": 1, "7": 2, "every": 2, "heaven": 2}
    assert {w: prosody.syllables(w) for w in counts} == counts
    # words the dictionary lacks are estimated from their spelling
    assert prosody.syllables("glimmerous") == 3 and prosody.syllables("snorkle") == 2
    assert prosody.rhymes("night", "light") and prosody.rhymes("cream", "scheme")
    assert not prosody.rhymes("night", "day") and not prosody.rhymes("night", "night")
    assert prosody.rhyme_scheme(["the day", "a night", "the way", "the light"]) == "ABAB"
    assert prosody.line_syllables("Don't stop; it's 5 o'clock!") == 6
