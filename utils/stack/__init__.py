"""Stacking many models into one.

library (load_library, Inputs, Library), ensemble (level-1 kinds: prior, best, mean, bag, topk, select,
beam, select-model; LEVEL1), selection (fitting them: LabelScorer, forward_select, beam_label), stackers
(level-2 stackers and cross-fitted evaluation: METHODS, method_factory, cross_fit, evaluate, choose).
"""
