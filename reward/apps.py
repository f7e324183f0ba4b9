from django.apps import AppConfig


class RewardConfig(AppConfig):
    name = "reward"
    verbose_name = "Rewards and fine-tuning"
    default_auto_field = "django.db.models.BigAutoField"
