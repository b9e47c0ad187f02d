"""medkit plugin ph-ensemble: pulmonary-hypertension grading from CT slices (paper 002, sections 6-8)."""
