"""Stage 1: compute DNN features of the stimuli, decode them from fMRI voxels.

Verbs: ``run`` (simulate if needed, extract true features, fit decoders, predict and
score decoded features) and ``simulate`` (only write the simulated experiment).
"""
