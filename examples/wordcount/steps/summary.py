"""Summary step (``long-summary`` / ``short-summary`` in the DAG): one line about the reduce output.

Its ``input`` is the reduce step's output (``{"$path": "steps.reduce.output"}``); prints a JSON string.
"""

import json
import sys

result = json.load(sys.stdin)["input"]
print(json.dumps(f"{result['total_words']} words in {result['documents']} documents; top: {result['top'][0][0]}"))
