"""Download a model into MODEL_CACHE_DIR/hub for a machine without internet (or ahead of time).

    python -m tools.fetch_model Qwen/Qwen2.5-7B-Instruct     # one Hub id
    python -m tools.fetch_model --all                         # every MODEL=auto tier

It fetches only what loading needs (config, tokenizer, safetensors, generation config), shows a
progress bar and resumes an interrupted download. Copy MODEL_CACHE_DIR/hub to the offline
machine: `MODEL=auto` finds the snapshot there without the network.
"""

from __future__ import annotations

import argparse

from bot.config import load_settings
from bot.generation.select import TIERS, download, hub_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.fetch_model", description=__doc__)
    parser.add_argument("model", nargs="*", help="Hugging Face Hub ids")
    parser.add_argument("--all", action="store_true", help="every MODEL=auto tier")
    args = parser.parse_args(argv)
    models = list(dict.fromkeys([*args.model, *(t.model_id for t in TIERS if args.all)]))
    if not models:
        parser.error("name a Hub id, or --all")
    cache_dir = load_settings().model_cache_dir
    for model_id in models:
        try:
            print(f"{model_id} -> {download(model_id, cache_dir)}")
        except Exception as exc:  # offline, unknown id, disk full: say it, no traceback
            print(f"{model_id}: could not download ({exc.__class__.__name__}: {exc})")
            return 1
    print(f"Copy {hub_dir(cache_dir)} to the same place on the offline machine.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
