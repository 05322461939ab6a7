"""Debiasing a remover's model: the search over FCR, the registered head-level methods and auto (search), the
diagnosis' pure parts (diagnosis: random attributes, logit shares, the verdict) and label-free attributes (infer)."""
