"""Sample-quality evaluation for mar-tiny: a digit classifier, metrics and reports.

classifier.py (torch): DigitClassifier, train/save/load, embed.
metrics.py (numpy): class_accuracy, feature_stats, frechet_distance, reference_stats,
evaluate_images. report.py: JSON, class grids, the quality-vs-cost plot and a table.
Submodules are imported on demand so that importing gtr.eval does not pull in torch.
"""
