"""Stage 1: compute DNN features of the stimuli, decode them from fMRI voxels.

Verbs: ``run`` (simulate if needed, extract true features, fit decoders, predict and
score decoded features), ``simulate`` (only write the simulated experiment), ``download``
(the real DIR fMRI files, checked), ``export-lab`` and ``import-lab`` (the Kamitani lab's
per-image feature files).
"""
