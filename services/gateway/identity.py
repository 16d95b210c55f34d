"""Only for `routes/billing.py` until its handlers move to resource modules: use `auth.identity`."""

from services.gateway.auth.identity import Identity as Identity
