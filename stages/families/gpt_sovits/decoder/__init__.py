"""The text-to-semantic decoder (GPT): one sequence alone, and sequences of many requests
continuously batched in one static KV cache."""
