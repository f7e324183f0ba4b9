"""Django settings. Every value that differs between machines comes from the environment
(see platform/env.example); production differs from a laptop only in its environment."""

from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("DATA_DIR", str(BASE_DIR / "data"))).resolve()

DEBUG = env_bool("DEBUG", False)
# A missing key in production must stop start-up; only a debug run may use a throwaway key.
SECRET_KEY = env_str("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "insecure-debug-only-key"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "ratings",
    "generation",
    "reward",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its 429 response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database_from_url(url: str) -> dict:
    config = dj_database_url.parse(url)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # The embedded default must survive a web server and a worker writing at once:
        # WAL lets readers run beside the writer, IMMEDIATE takes the write lock up front
        # (no deadlocking lock upgrade), and the timeout waits instead of failing.
        config["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
        return config
    config["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 300, minimum=0)
    # A health check costs a round trip on every request; Django already drops a connection
    # that errored, so it is only worth it where a proxy silently kills idle connections.
    config["CONN_HEALTH_CHECKS"] = env_bool("DATABASE_CONN_HEALTH_CHECKS", False)
    if env_bool("DATABASE_PREPARED_STATEMENTS", True):
        # Planning the hot path's joins takes ~1 ms, several times their execution; prepared
        # statements (server-side binding, prepared after the 2nd use on a connection) plan
        # once per connection. Turn off behind a transaction-pooling proxy such as PgBouncer.
        config.setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=2)
    pool_max = env_int("DATABASE_POOL_MAX_SIZE", 0, minimum=0)
    if pool_max:
        # psycopg_pool inside each process; Django requires persistent connections off then.
        config["CONN_MAX_AGE"] = 0
        config.setdefault("OPTIONS", {})["pool"] = {"min_size": 1, "max_size": pool_max}
    return config


DATA_DIR.mkdir(parents=True, exist_ok=True)
DATABASES = {
    "default": _database_from_url(env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}"))
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The cache holds the rate limits' counters, so every web worker must see the same one:
# redis://... across hosts; by default a folder in DATA_DIR, shared by this machine's
# processes (gunicorn's workers, the Celery worker); locmem:// counts per process.
CACHE_URL = env_str("CACHE_URL", "")
if CACHE_URL.startswith(("redis://", "rediss://", "unix://")):
    _cache = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
elif CACHE_URL == "locmem://":
    _cache = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
elif not CACHE_URL:
    _cache = {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(DATA_DIR / "cache"),
        "OPTIONS": {"MAX_ENTRIES": 2000},
    }
else:
    raise ImproperlyConfigured(
        f"CACHE_URL={CACHE_URL!r}: use redis://host:port/db, locmem:// or leave it empty."
    )
CACHES = {"default": _cache}

# Failed logins (the site's and the admin's login pages, and anything that calls
# authenticate() with a request) are counted per username and client address by django-axes;
# over the limit, that pair is refused with a 429 for the cool-off time. Per pair, so that a
# stranger's guesses cannot lock the real admin out from their own address.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_float("LOGIN_COOLOFF_MINUTES", 15.0))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "ratings.abuse.client_ip"  # behind TRUSTED_PROXY_COUNT proxies too
AXES_VERBOSE = False

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns on every request until collectstatic ran
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(DATA_DIR / "media"))).resolve()


def _media_storage(kind: str) -> dict:
    """Where clip audio (and fine-tuning samples) are kept: a folder on this machine, or an
    S3-compatible object store that every web and worker host reaches (django-storages).
    Either way the web streams each clip through Django (ratings.api.views.ClipView), so the
    bucket stays private and raters never see its URLs."""
    if kind == "filesystem":
        return {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    if kind != "s3":
        raise ImproperlyConfigured(f"MEDIA_STORAGE={kind!r}: use filesystem or s3.")
    from botocore.config import Config  # only a process configured for S3 pays the import

    endpoint = env_str("AWS_S3_ENDPOINT_URL", "")
    if endpoint and not endpoint.startswith(("http://", "https://")):
        raise ImproperlyConfigured(f"AWS_S3_ENDPOINT_URL={endpoint!r} is not an http(s) URL.")
    addressing = env_str("AWS_S3_ADDRESSING_STYLE", "")
    if addressing not in ("", "auto", "path", "virtual"):
        raise ImproperlyConfigured(f"AWS_S3_ADDRESSING_STYLE={addressing!r}: use path or virtual.")
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env_str("AWS_STORAGE_BUCKET_NAME"),
            # Empty: AWS itself; MinIO, Ceph, Garage and the like give their URL here.
            "endpoint_url": endpoint or None,
            "region_name": env_str("AWS_S3_REGION_NAME", "") or None,
            # Unset: boto3's own chain (an instance role, ~/.aws), so no key need be written down.
            "access_key": env_str("AWS_ACCESS_KEY_ID", "") or None,
            "secret_key": env_str("AWS_SECRET_ACCESS_KEY", "") or None,
            # A key prefix, so one bucket can hold several deployments' media.
            "location": env_str("AWS_LOCATION", ""),
            # Objects stay private (the bucket's policy decides), and a name is never reused,
            # as on the filesystem storage.
            "default_acl": None,
            "file_overwrite": False,
            # Given a client_config, django-storages ignores its own addressing style, so it
            # is set here: "path" for most self-hosted stores, whose buckets have no DNS names.
            # A store that is down fails a clip request well within gunicorn's timeout instead
            # of holding the web worker for boto3's default minute.
            "client_config": Config(
                s3={"addressing_style": addressing or None},
                connect_timeout=5,
                read_timeout=15,
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        },
    }


def _snapshot_storage(media: dict) -> dict:
    """Where finished dataset snapshots are kept (ratings.snapshots.storage): a folder,
    SNAPSHOT_DIR, while media is one; else the media's bucket under its own prefix,
    `snapshots/`, so a web host serves the files that a worker on another host built. Snapshot
    files keep their names, and a rebuild replaces them: these objects are overwritten."""
    if media["BACKEND"] != "storages.backends.s3.S3Storage":
        return {"BACKEND": "ratings.snapshots.storage.SnapshotFolderStorage"}
    location = "/".join(
        part for part in (media["OPTIONS"]["location"].strip("/"), "snapshots") if part
    )
    options = {**media["OPTIONS"], "location": location, "file_overwrite": True}
    return {"BACKEND": media["BACKEND"], "OPTIONS": options}


MEDIA_STORAGE = env_str("MEDIA_STORAGE", "filesystem")
_MEDIA = _media_storage(MEDIA_STORAGE)
STORAGES = {
    "default": _MEDIA,
    "snapshots": _snapshot_storage(_MEDIA),
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
if DEBUG:
    STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
WHITENOISE_USE_FINDERS = DEBUG

SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# HTTPS in production (platform/env.example): redirect plain HTTP (the health check stays
# reachable for load balancers that probe over HTTP), tell browsers to use HTTPS only, and,
# behind a TLS-terminating proxy, believe its X-Forwarded-Proto header (only then: a client
# could send the header itself).
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("TRUST_PROXY_SSL_HEADER", False) else None
)
# Scripts run only from our own static files or with the page's nonce (the few inline
# scripts carry {{ request.csp_nonce }}): injected markup cannot run script. Inline styles
# stay allowed (Swagger UI writes them); audio may be played from blob: URLs.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, "'unsafe-inline'"],
        "img-src": [SELF, "data:"],
        "media-src": [SELF, "blob:"],
        "object-src": [NONE],
        "base-uri": [SELF],
    }
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "ratings.authentication.RaterTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "ratings.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Music preferences API",
    "DESCRIPTION": (
        "Raters lease pairs and vote; researchers read votes, ratings, prompts, tracks and "
        "campaigns and build dataset snapshots. Authenticate with `Authorization: Token <key>` "
        "or a logged-in session."
    ),
    "VERSION": "1",
    # The schema lists the researcher endpoints and what they reveal, so it is not public.
    "SERVE_PERMISSIONS": ["ratings.permissions.IsResearcher"],
    "SERVE_INCLUDE_SCHEMA": False,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "ratings.api.schema.add_error_responses",
    ],
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI's files come from the installed sidecar package: the docs page loads nothing
    # from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a "status"; name each choice set instead of a hashed suffix.
    "ENUM_NAME_OVERRIDES": {
        "CampaignStatusEnum": "ratings.models.Campaign.Status",
        "ProtocolEnum": "ratings.models.Campaign.Protocol",
        "TrainingJobStatusEnum": "reward.models.TrainingJob.Status",
        "SnapshotStatusEnum": "ratings.models.DatasetSnapshot.Status",
        "PromptSourceEnum": "generation.models.Prompt.Source",
        "PlaygroundRequestStatusEnum": "ratings.models.PlaygroundRequest.Status",
        # A choice in screen terms (slot A is the left clip), as votes are sent.
        "SlotChoiceEnum": ["A", "B", "tie", "both_bad"],
    },
}

# --- Rating rules -------------------------------------------------------------------------
RATING_LEASE_SECONDS = env_int("RATING_LEASE_SECONDS", 900, minimum=30)
# How much the browser's clock may run ahead of the server's when it reports listening time.
RATING_LISTEN_SLACK_MS = env_int("RATING_LISTEN_SLACK_MS", 1500, minimum=0)
RATING_MAX_VOTE_BODY_BYTES = env_int("RATING_MAX_VOTE_BODY_BYTES", 4096, minimum=512)

# --- Recruitment and anti-abuse (ratings.recruitment, ratings.abuse) ----------------------
# Sliding one-minute windows in the cache (CACHE_URL: shared by all web workers).
VOTE_RATE_LIMIT_PER_MINUTE = env_int("VOTE_RATE_LIMIT_PER_MINUTE", 240, minimum=1)
VOTE_RATE_LIMIT_PER_IP_PER_MINUTE = env_int("VOTE_RATE_LIMIT_PER_IP_PER_MINUTE", 1200, minimum=1)
# IPs are stored only as HMAC-SHA256 hashes; the key defaults to one derived from SECRET_KEY.
IP_HASH_SALT = env_str("IP_HASH_SALT", "")
# Reverse proxies in front of the web server whose X-Forwarded-For entries are trusted.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0)
# Flags on crowd votes (kept, excluded from statistics until an admin clears them).
VOTE_TOO_FAST_SHARE = env_float("VOTE_TOO_FAST_SHARE", 0.25)
VOTE_BURST_MAX = env_int("VOTE_BURST_MAX", 15, minimum=1)
VOTE_BURST_WINDOW_SECONDS = env_int("VOTE_BURST_WINDOW_SECONDS", 60, minimum=1)
SHARED_IP_MAX_RATERS = env_int("SHARED_IP_MAX_RATERS", 3, minimum=1)
SHARED_IP_WINDOW_HOURS = env_int("SHARED_IP_WINDOW_HOURS", 24, minimum=1)
# The admin is alerted when a campaign's share of counted votes falls by this much.
COUNTED_SHARE_ALERT_DROP = env_float("COUNTED_SHARE_ALERT_DROP", 0.15)
COUNTED_SHARE_ALERT_MIN_VOTES = env_int("COUNTED_SHARE_ALERT_MIN_VOTES", 20, minimum=1)
# Anyone may create a rater account at /join/<campaign>/ (off: crowd links only).
SELF_REGISTRATION = env_bool("SELF_REGISTRATION", False)
MTURK_SUBMIT_HOSTS = env_list("MTURK_SUBMIT_HOSTS", ["www.mturk.com", "workersandbox.mturk.com"])
# Version leaderboards (ratings.leaderboards): bootstrap rounds of the Bradley-Terry intervals,
# and the comparisons a version needs before it is listed.
LEADERBOARD_BOOTSTRAP_ROUNDS = env_int("LEADERBOARD_BOOTSTRAP_ROUNDS", 1000, minimum=0)
LEADERBOARD_MIN_VOTES = env_int("LEADERBOARD_MIN_VOTES", 20, minimum=1)
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 1_048_576, minimum=4096)

# --- Playground (ratings.playground) -------------------------------------------------------
# Anonymous visitors get a guest rater bound to their session (off: signed-in raters only).
PLAYGROUND_ALLOW_ANONYMOUS = env_bool("PLAYGROUND_ALLOW_ANONYMOUS", False)
# After the vote, show which versions made the two clips.
PLAYGROUND_REVEAL_VERSIONS = env_bool("PLAYGROUND_REVEAL_VERSIONS", True)
# Version-against-version battles among arena-enabled versions, each drawn with weight
# 1/(its counted playground votes + PLAYGROUND_ARENA_PRIOR_VOTES); off: two samples of the
# active version (reward-model data).
PLAYGROUND_ARENA = env_bool("PLAYGROUND_ARENA", False)
PLAYGROUND_ARENA_PRIOR_VOTES = env_float("PLAYGROUND_ARENA_PRIOR_VOTES", 5.0)
# Queued or generating requests one rater may have at once.
PLAYGROUND_MAX_PENDING = env_int("PLAYGROUND_MAX_PENDING", 3, minimum=1)
PLAYGROUND_MIN_PROMPT_CHARS = env_int("PLAYGROUND_MIN_PROMPT_CHARS", 3, minimum=1)
PLAYGROUND_MAX_PROMPT_CHARS = env_int("PLAYGROUND_MAX_PROMPT_CHARS", 300, minimum=1)
if PLAYGROUND_MAX_PROMPT_CHARS > 500:  # Prompt.text holds 500 characters
    raise ImproperlyConfigured("PLAYGROUND_MAX_PROMPT_CHARS may be at most 500.")
# Words refused in prompts (comma-separated, case-insensitive, whole words).
PLAYGROUND_BLOCKLIST = env_list("PLAYGROUND_BLOCKLIST", [])
# Dotted path of a callable(text) -> reason or None, asked after the checks above; "" = none.
# Active pair selection ranks pairs by their clips' reward gap; the rewards come from this
# hook (ratings knows no reward models): campaign -> (track field -> reward expression) or
# None. Empty: active selection serves pairs as uniform selection does.
ACTIVE_SELECTION_REWARD_HOOK = env_str(
    "ACTIVE_SELECTION_REWARD_HOOK", "reward.selectors.campaign_clip_reward"
)
PLAYGROUND_MODERATION_HOOK = env_str("PLAYGROUND_MODERATION_HOOK", "")
PLAYGROUND_CLIP_SECONDS = env_float("PLAYGROUND_CLIP_SECONDS", 10.0)
# A request not ready after this long fails (the worker's soft time limit) and may be retried.
PLAYGROUND_TIMEOUT_SECONDS = env_int("PLAYGROUND_TIMEOUT_SECONDS", 90, minimum=5)
# Guests' requests per hour, per guest and per IP hash.
PLAYGROUND_GUEST_REQUESTS_PER_HOUR = env_int("PLAYGROUND_GUEST_REQUESTS_PER_HOUR", 30, minimum=1)

# --- Generation ---------------------------------------------------------------------------
GENERATION_DEFAULT_CLIP_SECONDS = env_float("GENERATION_DEFAULT_CLIP_SECONDS", 10.0)
SOUNDFONT_PATH = env_str("SOUNDFONT_PATH", "")
# Checkpoints of pretraining runs (model, optimizer, config, step) and exported generators.
GENERATOR_DIR = Path(env_str("GENERATOR_DIR", str(DATA_DIR / "generators"))).resolve()

# --- Rewards and fine-tuning --------------------------------------------------------------
# Checkpoints, frozen training rows, scorer files and cached log-mel features.
REWARD_DIR = Path(env_str("REWARD_DIR", str(DATA_DIR / "rewards"))).resolve()
# Dataset snapshots for researchers: one directory per snapshot, with its manifest. With
# MEDIA_STORAGE=s3 they live in the bucket (STORAGES["snapshots"]) and a worker only builds
# each one here before uploading it.
SNAPSHOT_DIR = Path(env_str("SNAPSHOT_DIR", str(DATA_DIR / "snapshots"))).resolve()
# A running job's worker writes a heartbeat at least this often...
TRAINING_HEARTBEAT_SECONDS = env_float("TRAINING_HEARTBEAT_SECONDS", 5.0)
# ...and a job whose heartbeat is older than this lost its worker: it is queued again and
# resumes from its last checkpoint.
TRAINING_STALE_SECONDS = env_int("TRAINING_STALE_SECONDS", 120, minimum=1)
# A generating campaign none of whose prompts finished (and that was not queued) for this long
# lost its worker or its messages: what it lacks is queued again (ratings.campaigns). Above a
# prompt task's time limit (330 s), so a prompt that is still running is not sent twice.
GENERATION_STALE_SECONDS = env_int("GENERATION_STALE_SECONDS", 360, minimum=1)
# Prompts per generation task when every version of the campaign samples in batches (the
# learned generator: 32 clips of 4 s took 6.0 s together against 14.7 s one by one,
# benchmarks/sampling_speed.py); other backends gain nothing from batches and get one prompt
# per task.
GENERATION_PROMPTS_PER_TASK = env_int("GENERATION_PROMPTS_PER_TASK", 16, minimum=1)

# --- Celery -------------------------------------------------------------------------------
_BROKER_DIR = DATA_DIR / "broker"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://localhost//")
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        # The embedded default: a broker that is just a folder, so a fresh machine needs no
        # server. Every process on this machine sees the same folder.
        "data_folder_in": str(_BROKER_DIR / "queue"),
        "data_folder_out": str(_BROKER_DIR / "queue"),
        "processed_folder": str(_BROKER_DIR / "processed"),
        # Exchange bindings; kombu's default is a "control" folder in the working directory.
        "control_folder": str(_BROKER_DIR / "control"),
        "store_processed": False,
    }
    if CELERY_BROKER_URL.startswith("filesystem")
    else {}
)
if CELERY_BROKER_URL.startswith("filesystem"):
    for _folder in ("queue", "processed", "control"):
        (_BROKER_DIR / _folder).mkdir(parents=True, exist_ok=True)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "generation.tasks.pretrain_generator": {"queue": "train"},
    "generation.tasks.*": {"queue": "generate"},
    "ratings.tasks.generate_campaign_prompts": {"queue": "generate"},
    "ratings.tasks.generate_playground_request": {"queue": "generate"},
    # Bookkeeping must not wait behind a long training job.
    "reward.tasks.requeue_stalled_jobs": {"queue": "default"},
    "reward.tasks.*": {"queue": "train"},
}
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 1800, minimum=10)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 5
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULE = {
    "expire-leases": {"task": "ratings.tasks.expire_leases", "schedule": 30.0},
    "refresh-leaderboards": {"task": "ratings.tasks.refresh_leaderboards", "schedule": 300.0},
    "refresh-reliability": {"task": "ratings.tasks.refresh_reliability", "schedule": 600.0},
    "requeue-stalled-training": {"task": "reward.tasks.requeue_stalled_jobs", "schedule": 60.0},
    "requeue-stalled-generation": {
        "task": "ratings.tasks.requeue_stalled_generation",
        "schedule": 60.0,
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
