#!/usr/bin/env python3
"""Prints a code block of README.md by name, so that tests run exactly what the README shows.

A block is named by an HTML comment on the line right before its opening fence (the comment is
invisible when the README is rendered; indentation, as in list items, is removed):

    <!-- test: prog.c -->
    ```c
    ...
    ```

    readme_blocks.py README.md NAME    prints block NAME (exit 1 if it is missing or not followed
                                       by a fenced block)
    readme_blocks.py README.md         lists the names, one per line
"""

from __future__ import annotations

import re
import sys
from typing import Dict, List

MARK = re.compile(r"^(\s*)<!-- test: (\S+) -->\s*$")
FENCE = re.compile(r"^(\s*)(```+)")


def blocks(text: str) -> Dict[str, str]:
    """name -> block text (without fences, dedented by the fence's indentation)."""
    lines = text.split("\n")
    out: Dict[str, str] = {}
    i = 0
    while i < len(lines):
        m = MARK.match(lines[i])
        if not m:
            i += 1
            continue
        name = m.group(2)
        if name in out:
            raise SystemExit(f"readme_blocks: block {name!r} is named twice")
        f = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
        if not f:
            raise SystemExit(f"readme_blocks: line {i + 2}: no ``` fence right after the name {name!r}")
        indent, fence = f.group(1), f.group(2)
        body: List[str] = []
        j = i + 2
        while j < len(lines) and not lines[j].strip().startswith(fence):
            line = lines[j]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            j += 1
        if j == len(lines):
            raise SystemExit(f"readme_blocks: block {name!r} is not closed")
        out[name] = "\n".join(body) + "\n"
        i = j + 1
    return out


def main(argv: List[str]) -> int:
    if len(argv) not in (1, 2):
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        found = blocks(f.read())
    if len(argv) == 1:
        print("\n".join(found))
        return 0
    if argv[1] not in found:
        print(f"readme_blocks: no block named {argv[1]!r} in {argv[0]} (have: {', '.join(found)})", file=sys.stderr)
        return 1
    sys.stdout.write(found[argv[1]])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
