"""The tiny simulated experiment the tests and the soak test (``tools/soak.py``) run: 32 px, 60 training images,
two layers (conv3_4 at 32 px has 16,384 units, decoded whole or in parts), a 4-step generator."""

TINY = {
    "experiment": "tiny",
    "seed": 0,
    "data": {"source": "simulated", "subjects": ["sub-01"], "rois": ["VC"]},
    "simulation": {
        "image_size": 32, "n_train_images": 60, "n_train_reps": 2, "n_test_natural": 8, "n_test_natural_reps": 3,
        "voxels_v1": 120, "voxels_v2": 120, "voxels_v3": 100, "voxels_v4": 60, "voxels_loc": 60, "voxels_ffa": 40,
        "voxels_ppa": 40, "voxels_other": 60,
    },
    "features": {"network": "vgg19", "weights": "random:0", "layers": ["conv3_4", "fc7"], "input_size": 32,
                 "batch_size": 16},
    "decoder": {"alphas": [10.0, 1000.0], "cv_folds": 2, "chunk_units": 1000},
    "generator": {"condition_layers": ["conv3_4", "fc7"], "image_size": 32, "base_channels": 8, "iterations": 4,
                  "batch_size": 8, "n_critic": 2, "tick_every": 2, "perceptual_layers": ["conv1_2"],
                  "consistency_layers": []},
    "eval": {"grid_columns": 6, "judge_weights": "random:1", "judge_input_size": 64},
}
