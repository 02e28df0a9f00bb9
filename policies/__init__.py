"""Controllers (SB3 PPO, bandit) and baselines behind one interface; lands with train-controller."""
