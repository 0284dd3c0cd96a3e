"""Hyperparameter and architecture search campaigns on Ray Tune; promotion of the best generator."""
