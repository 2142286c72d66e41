"""The ML service: candidate segmentation (training, batch and online assignment)."""
