"""The tiny configuration the workflow tests run the whole pipeline with (`snakemake` as a user runs it,
on a synthetic dataset of 8 + 8 identities at 32 x 16, 2 epochs): about a minute on 2 cores. A test
that needs other values merges its own over it."""

TINY_PIPELINE = {
    "synthetic": {"train_ids": 8, "test_ids": 8, "cameras": 3, "cameras_per_id": [2, 3],
                  "images_per_camera": [2, 2], "distractors": 6, "junk": 4, "multi_query_images": [2, 2],
                  "height": 32, "width": 16},
    "model": {"embedding_dim": 32},
    "train": {"height": 32, "width": 16, "epochs": 2, "batch_pairs": 8, "lr_step": 1},
    "evaluate": {"batch_size": 64},
}
