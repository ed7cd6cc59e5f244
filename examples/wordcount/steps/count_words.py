"""Map step: count the words of one document (``item``: {"name", "text"} or {"name", "url"}).

Prints {"name", "words", "counts": {word: n}} as JSON. A word is a run of letters (apostrophes inside
kept), lower-cased; words shorter than 3 letters and a few very common ones are not counted.
"""

import json
import re
import sys
import urllib.request
from collections import Counter

STOP = {"the", "and", "that", "with", "for", "was", "his", "her", "are", "but", "not", "you", "its", "had", "has",
        "this", "from", "they", "she", "him", "were", "all", "one", "their", "there", "which", "into", "our"}

item = json.load(sys.stdin)["item"]
if "url" in item:
    with urllib.request.urlopen(item["url"], timeout=10) as response:
        text = response.read().decode("utf-8")
else:
    text = item["text"]
words = [w for w in re.findall(r"[a-z]+(?:'[a-z]+)?", text.lower()) if len(w) >= 3 and w not in STOP]
print(json.dumps({"name": item["name"], "words": len(words), "counts": dict(Counter(words))}))
