"""Deploy: ship a built release to the web hosts and switch to it without dropping a request.

On each host, as the deploy user (whose sudo covers the app's units and the
upstream switch only), one service at a time:

    lock (atomic mkdir; a heartbeat while it runs) -> upload and unpack into releases/<id> (checksum, then
    an atomic rename) -> release tasks (migrations) -> start the idle color on
    the new release -> health gate -> switch nginx's upstream (nginx -t, graceful
    reload) -> drain and stop the old color -> atomic `current` switch -> prune
    -> history line -> unlock, on failure too.

build: the artifact, built once per source; settings: how a service deploys on a host; scripts: the
shell the host runs, as data; state: what a host holds, read in one round trip; lock: the deploy
lock, its heartbeat and its takeover after the lease; executor: the steps on one host; rollout: a
service to all its hosts, rolling; status: what serves where; maintenance: the maintenance page on
or off.
"""
