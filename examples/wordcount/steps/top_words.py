"""Reduce step: add up the per-document counts (``items``) and print the top words as JSON."""

import json
import sys
from collections import Counter

doc = json.load(sys.stdin)
total = Counter()
per_document = {}
for result in doc.get("items", []):
    total.update(result["counts"])
    per_document[result["name"]] = result["words"]
top = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[: int((doc.get("workflow_input") or {}).get("top", 10))]
print(json.dumps({"documents": len(per_document), "total_words": sum(per_document.values()),
                  "per_document": per_document, "top": [[w, n] for w, n in top]}))
