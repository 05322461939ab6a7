"""The paper's math as pure functions and the two edits: Eq. 3-4 (stats), Eq. 5-6 (scores), Eq. 7-8 (edit:
WeightEdit), the head-level edit (head_edit: HeadEdit), r sweeps and the (policy x weights x r) search (sweep), and
the group metrics (metrics). They read no files and run no model."""
