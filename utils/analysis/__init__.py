"""Looking at runs: the HTML report, plots, leaderboard, diversity, pruning, label issues, linear probe."""
