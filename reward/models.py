# Reward models and fine-tuning runs arrive with the reward-model issue; the app exists now
# so that the layout, settings and Celery routing for the `train` queue are in place.
