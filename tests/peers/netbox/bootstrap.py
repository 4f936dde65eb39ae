"""Make the NetBox test peer's login and API tokens exist with fixed, known values (idempotent).

Run with the NetBox venv's python, NETBOX_ROOT set, after the migrations (netbox/start.sh does).
Reads GT_NB_USER, GT_NB_PASSWORD, GT_NB_V2_KEY (12 chars), GT_NB_V2_SECRET (40 chars) and
GT_NB_V1_TOKEN (40 chars) from the environment. The REST API never lets a client choose a
token's value, so the tokens are written through NetBox's own models here.
"""
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "netbox.settings")
import django  # noqa: E402

django.setup()
from users.models import Token, User  # noqa: E402

env = os.environ
name, password = env["GT_NB_USER"], env["GT_NB_PASSWORD"]
v2_key, v2_secret, v1_token = env["GT_NB_V2_KEY"], env["GT_NB_V2_SECRET"], env["GT_NB_V1_TOKEN"]

user, created = User.objects.get_or_create(username=name, defaults={"email": "gt-admin@example.invalid"})
if created or not user.check_password(password) or not (user.is_superuser and user.is_active):
    user.set_password(password)
    user.is_superuser = user.is_active = True
    user.save()
    print(f"{'created' if created else 'reset'} superuser {name}")


def usable(tok, secret):
    return (tok.user_id == user.pk and tok.enabled and tok.write_enabled and tok.expires is None
            and tok.validate(secret))


v2 = Token.objects.filter(version=2, key=v2_key).first()
if v2 is not None and not usable(v2, v2_secret):
    v2.delete()
    v2 = None
if v2 is None:
    # key first, then the plaintext: the token setter hashes it with the current pepper
    v2 = Token(user=user, version=2, key=v2_key, token=v2_secret, write_enabled=True,
               description="groundtruth test peer: fixed v2 token")
    v2.full_clean()
    v2.save()
    print(f"created v2 token nbt_{v2_key}.…")

v1 = Token.objects.filter(version=1, plaintext=v1_token).first()
if v1 is not None and not usable(v1, v1_token):
    v1.delete()
    v1 = None
if v1 is None:
    v1 = Token(user=user, version=1, token=v1_token, write_enabled=True,
               description="groundtruth test peer: fixed legacy v1 token")
    v1.full_clean()
    v1.save()
    print("created legacy v1 token")
print("bootstrap: superuser and tokens ready", file=sys.stderr)
