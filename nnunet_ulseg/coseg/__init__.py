"""Lesion co-segmentation (co-segmentation paper): lesion embeddings, clusters, pairs and pair inference."""
