"""Looking at runs.

scores (out-of-fold predictions with their truth: Truth, load_oof, merge_oofs, score_oof), leaderboard (leaderboard, format_table), report (the HTML report: build_context, render), plots
(plot_prob_distributions, plot_history, plot_correlation), diversity (pairwise_agreement,
pairwise_pearson, cluster_order), pruning (rank_runs, delete_artifacts), label_issues
(rank_label_issues), probe (the linear probe: probe_folds, fit_predict), logreg (every label's
logistic regression in one solve: fit_logreg, select_C), explore and explore_page (the error
explorer: load_explorer, build_page).
"""
