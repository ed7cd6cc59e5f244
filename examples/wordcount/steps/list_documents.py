"""List step: the documents to count, from the workflow input (stdin: the task's input document).

The input holds either ``documents`` ([{"name", "text"}], texts shipped in the input because the step
containers run with no network and see nothing of the host) or ``urls`` ([{"name", "url"}], fetched
by the map step over the host network). Prints the list of work items as JSON.
"""

import json
import sys

doc = json.load(sys.stdin)
data = doc.get("workflow_input") or {}
items = [{"name": d["name"], "text": d["text"]} for d in data.get("documents", [])]
items += [{"name": u["name"], "url": u["url"]} for u in data.get("urls", [])]
print(json.dumps(items))
