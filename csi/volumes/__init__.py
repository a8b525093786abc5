"""What a volume is: directory and loop volumes, their parameters and their targets."""
