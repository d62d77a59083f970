"""Tasks: the prompts and data sets analyzers run on (needle in a haystack, few-shot classification,
entity binding, speech clips)."""
