"""The synthesis worker process: its chunk queue, batching and LRU voice cache."""
