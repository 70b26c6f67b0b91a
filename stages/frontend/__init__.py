"""The frontend process: client peers, request planning (normalize, split, G2P), chunk scheduling and recovery."""
