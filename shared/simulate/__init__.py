"""The simulated experiment: stimuli, a brain-like encoding model, BData writing."""
