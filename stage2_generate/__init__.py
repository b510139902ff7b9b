"""Stage 2: a WGAN-GP generator conditioned on DNN features reconstructs the images.

Verb ``run``: train the generator on (true features, image) pairs of the training
stimuli (resuming from the last checkpoint), reconstruct the test images from the
decoded features in the feature store, score them beside the baselines (ridge from
voxels to pixels, nearest training image by decoded features) and export grids,
tables and plots.
"""
