"""Training: the shared fold assignment, cross-validated training and the radiomics baseline."""
