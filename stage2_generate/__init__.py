"""Stage 2: a WGAN-GP generator conditioned on DNN features reconstructs the images.

Verbs: ``run`` trains the generator on stage 1's out-of-fold decoded features of the
training images (``generator.train_inputs``; resuming from the last checkpoint; a held-out
fraction of the training images, ``eval.validation_fraction``, a tenth by default, chooses the
tick that reconstructs; on decoded features imported from the lab's files, which have neither, true
features and no hold-out: ``imported.py``), reconstructs the test images from their decoded features with it and
with the published methods named in ``methods.run``, scores them all beside the baselines (ridge
from voxels to pixels, nearest training image by decoded features) and writes grids, tables and
plots; ``compare`` runs every variant of a compare file through both stages, cached (tables,
paired stats, figures); ``export`` writes figures and files from finished runs, re-running nothing.
"""
