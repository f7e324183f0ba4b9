"""Reward models and fine-tuning loops in plain torch. Nothing here imports Django: the web
process never loads torch, and these modules are testable and reusable on their own."""
