#!/usr/bin/env python3
"""Moves the development part out of the written training files, once.

For every train/NAME.jsonl, each line whose SHA-256 of its UTF-8 text ("text", or the turns
joined with a newline) has a first byte below 52 (about 1 line in 5) goes to dev/NAME.jsonl; the
rest stays. The rule depends on the text alone, so running the script again on its own output
moves nothing more than the lines already moved would have been... it is run once, when a new
training file is added: `python3 data/guard/split_dev.py data/guard train/NAME.jsonl`.
"""
import hashlib
import json
import pathlib
import sys


def key(record):
    text = record["text"] if "text" in record else "\n".join(record["turns"])
    return hashlib.sha256(text.encode("utf-8")).digest()[0]


def main():
    root = pathlib.Path(sys.argv[1])
    for name in sys.argv[2:]:
        src = root / name
        dst = root / "dev" / src.name
        keep, move = [], []
        for line in src.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            (move if key(json.loads(line)) < 52 else keep).append(line)
        dst.parent.mkdir(parents=True, exist_ok=True)
        with dst.open("a", encoding="utf-8") as f:
            f.writelines(l + "\n" for l in move)
        src.write_text("".join(l + "\n" for l in keep), encoding="utf-8")
        print(f"{name}: {len(keep)} stay in train, {len(move)} to dev/{src.name}")


if __name__ == "__main__":
    main()
