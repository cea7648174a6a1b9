#!/usr/bin/env python3
"""Puts a generated block into a Markdown file between its begin and end
markers, or, the first time, appends it under a new heading.

Usage: replace-block.py FILE BEGIN END HEADING < block
(the block, read from standard input, includes the markers)."""
import sys

path, begin, end, heading = sys.argv[1:5]
block = sys.stdin.read().rstrip("\n")
text = open(path).read()
if begin in text and end in text:
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    text = head + block + tail
else:
    text = text.rstrip("\n") + f"\n\n## {heading}\n\n" + block + "\n"
open(path, "w").write(text)
