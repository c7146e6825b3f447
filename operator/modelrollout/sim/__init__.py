"""Virtual-time simulation of rollouts: the real decision core, synthetic traffic, no cluster."""
