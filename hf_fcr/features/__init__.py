"""The pass: reading data (batches), finding the head (heads), preprocessing (preprocess), one run of the backbone
(feature_pass: FeaturePass, extract / collect), its output (feature_set: FeatureSet) and its saved state (pass_state:
one identity for the feature cache and the checkpoints)."""
