"""Stacking many models into one.

library (load_library, Inputs, Library), ensemble (level-1 kinds: prior, best, mean, bag, topk, select,
beam, select-model; LEVEL1), selection (fitting them: LabelScorer, forward_select, beam_label), stackers
(level-2 stackers: lr, ridge, ridge-corr, xgb, lgbm, nn), methods (the --method names: METHODS, LEVEL2,
parse_method, method_factory), layers (Layered, build_factory), crossfit (cross_fit, cross_predict, Scored),
evaluation (evaluate, member_scores, choose), stack_report (build_report, render_report).
"""
