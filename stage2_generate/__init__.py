"""Stage 2: a WGAN-GP generator conditioned on DNN features reconstructs the images.

Verb ``run``: train the generator on stage 1's out-of-fold decoded features of the
training images (``generator.train_inputs``; resuming from the last checkpoint; a held-out
tenth of the training images chooses the tick that reconstructs), reconstruct the test
images from their decoded features, score them beside the baselines (ridge from voxels to
pixels, nearest training image by decoded features) and export grids, tables and plots.
"""
