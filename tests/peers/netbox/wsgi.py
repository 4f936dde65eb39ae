# gunicorn entry point for the NetBox test peer: NetBox's WSGI application with Django's
# static-files handler in front, so /static/ (web UI assets collected into NETBOX_ROOT/static)
# is served without nginx. Test peer only.
from django.contrib.staticfiles.handlers import StaticFilesHandler
from netbox.wsgi import application as netbox_application

application = StaticFilesHandler(netbox_application)
