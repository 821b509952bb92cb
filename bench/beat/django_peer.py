"""The peer for bench/beat: Celery beat with django-celery-beat's DatabaseScheduler (Debian's
python3-django-celery-beat 2.4.0, Celery 5.2.6, Django 3.2), configured minimally on the
Postgres of CELERIAC_DATABASE_URL in the schema BENCH_SCHEMA, publishing to CELERIAC_BROKER_URL.

    python3 -m celery -A django_peer beat -S django_celery_beat.schedulers:DatabaseScheduler
    python3 -c 'import django_peer; django_peer.migrate()'
"""
import os
from urllib.parse import urlparse

import django
from django.conf import settings

_db = urlparse(os.environ["CELERIAC_DATABASE_URL"])
if not settings.configured:
    settings.configure(
        INSTALLED_APPS=["django_celery_beat"],
        DATABASES={"default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _db.path.lstrip("/"), "USER": _db.username, "PASSWORD": _db.password,
            "HOST": _db.hostname, "PORT": _db.port or 5432,
            "OPTIONS": {"options": "-c search_path=" + os.environ["BENCH_SCHEMA"]},
        }},
        USE_TZ=True, TIME_ZONE="UTC", CELERY_TIMEZONE="UTC",
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()

from celery import Celery  # noqa: E402

app = Celery("bench_beat", broker=os.environ["CELERIAC_BROKER_URL"])
app.conf.update(timezone="UTC", enable_utc=True, result_expires=None,
                beat_scheduler="django_celery_beat.schedulers:DatabaseScheduler")


def migrate():
    from django.core.management import call_command
    call_command("migrate", "django_celery_beat", verbosity=0)
