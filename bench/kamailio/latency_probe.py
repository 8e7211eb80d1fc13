#!/usr/bin/env python3
"""Sequential (unloaded) latency probe for a SIP registrar + proxy, microsecond
resolution (SIPp 3.6.1 only measures with a 4 ms coarse clock here).

  latency_probe.py 127.0.0.1:5060 [--n 500] [--gap-ms 2] [--transport udp|tcp]
                  [--password PW [--reg-user U] [--caller U] [--callee U]]

One request in flight at a time over UDP (or one TCP connection each way):
  * REGISTER (unique AoR probe<i>)            -> 200          : register_us
  * INVITE probecallee via proxy -> built-in UAS (180, 200)   : invite_200_us
    ACK (loose-routed via Record-Route), BYE via proxy -> 200 : bye_200_us
The built-in UAS answers immediately, so invite/bye figures are the proxy's two
traversals plus kernel loopback hops.  Prints one summary line per metric.
Loopback only.

With --password the probe answers 401/407 challenges (MD5 digest, qop=auth
when offered): REGISTER refreshes ONE account (--reg-user) instead of unique
AoRs, the callee (--callee) and caller (--caller) are accounts too, and each
timed figure includes the challenge round trip (request -> 401/407 -> request
with credentials -> 200), as a phone sees it.
"""
import argparse, hashlib, random, socket, statistics, sys, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("target")
ap.add_argument("--n", type=int, default=500)
ap.add_argument("--gap-ms", type=float, default=2.0)
ap.add_argument("--timeout", type=float, default=2.0)
ap.add_argument("--transport", choices=["udp", "tcp"], default="udp")
ap.add_argument("--password", default=None, help="digest password of the accounts below")
ap.add_argument("--reg-user", default="probereg")
ap.add_argument("--caller", default="probecaller")
ap.add_argument("--callee", default=None, help="default: probecallee<random> (open mode)")
a = ap.parse_args()
thost, tport = a.target.rsplit(":", 1)
tport = int(tport)
if not thost.startswith("127."):
    sys.exit("loopback targets only")
TGT = (thost, tport)
LIP = "127.0.0.1"
TCP = a.transport == "tcp"
VIA_T = "TCP" if TCP else "UDP"
TP = ";transport=tcp" if TCP else ""
CALLEE = a.callee or "probecallee%d" % random.randint(1000, 9999)
COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length"}

def parse(data):
    txt = data.decode(errors="replace")
    head, _, body = txt.partition("\r\n\r\n")
    lines = head.split("\r\n")
    hdrs = []
    for l in lines[1:]:
        if ":" in l:
            k, v = l.split(":", 1)
            k = k.strip().lower(); k = COMPACT.get(k, k)
            hdrs.append((k, v.strip()))
    return lines[0], hdrs, body

def h(hdrs, name):
    return [v for k, v in hdrs if k == name]

def uri_of(v):
    return v[v.find("<") + 1:v.find(">")] if "<" in v else v.split(";")[0]

def br():
    return "z9hG4bK" + "%x" % random.getrandbits(48)

# ------------------------------------------------------------- transports
class Framer:
    """splits a TCP byte stream into SIP messages (Content-Length framing)"""
    def __init__(self):
        self.buf = b""
    def feed(self, data):
        self.buf += data
        out = []
        while True:
            self.buf = self.buf.lstrip(b"\r\n")
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return out
            clen = 0
            for line in self.buf[:i].split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() in (b"content-length", b"l"):
                    clen = int(v.strip() or 0)
            end = i + 4 + clen
            if len(self.buf) < end:
                return out
            out.append(self.buf[:end]); self.buf = self.buf[end:]

class UdpUac:
    def __init__(self):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); self.s.bind((LIP, 0))
        self.port = self.s.getsockname()[1]
    def send(self, msg):
        self.s.sendto(msg.encode(), TGT)
    def recv(self, timeout):
        self.s.settimeout(timeout)
        return self.s.recvfrom(65535)[0]

class TcpUac:
    def __init__(self):
        self.s = socket.create_connection(TGT)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = self.s.getsockname()[1]
        self.fr = Framer(); self.q = []
    def send(self, msg):
        self.s.sendall(msg.encode())
    def recv(self, timeout):
        deadline = time.time() + timeout
        while not self.q:
            left = deadline - time.time()
            if left <= 0:
                raise socket.timeout()
            self.s.settimeout(left)
            data = self.s.recv(65535)
            if not data:
                sys.exit("target closed the TCP connection")
            self.q.extend(self.fr.feed(data))
        return self.q.pop(0)

uac = TcpUac() if TCP else UdpUac()
UACP = uac.port

# ---------------------------------------------------------------- built-in UAS
stop = False
def uas_handle(data, send):
    first, hdrs, _ = parse(data)
    meth = first.split(" ", 1)[0]
    if first.startswith("SIP/2.0") or meth == "ACK":
        return
    def reply(code, reason, totag=True, rr=False, contact=False):
        out = ["SIP/2.0 %d %s" % (code, reason)]
        out += ["Via: " + v for v in h(hdrs, "via")]
        out += ["From: " + h(hdrs, "from")[0]]
        to = h(hdrs, "to")[0]
        if totag and ";tag=" not in to:
            to += ";tag=uas" + h(hdrs, "call-id")[0][:8]
        out += ["To: " + to, "Call-ID: " + h(hdrs, "call-id")[0], "CSeq: " + h(hdrs, "cseq")[0]]
        if rr:
            out += ["Record-Route: " + v for v in h(hdrs, "record-route")]
        if contact:
            out += ["Contact: <sip:%s@%s:%d%s>" % (CALLEE, LIP, UASP, TP)]
        out += ["Content-Length: 0", "", ""]
        send("\r\n".join(out).encode())
    if meth == "INVITE":
        reply(180, "Ringing", rr=True, contact=True)
        reply(200, "OK", rr=True, contact=True)
    else:
        reply(200, "OK")

if TCP:
    uas = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    uas.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    uas.bind((LIP, 0)); uas.listen(64)
    UASP = uas.getsockname()[1]
    def conn_loop(c):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fr = Framer()
        c.settimeout(0.2)
        while not stop:
            try:
                data = c.recv(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            for m in fr.feed(data):
                uas_handle(m, c.sendall)
    def uas_loop():
        uas.settimeout(0.2)
        while not stop:
            try:
                c, _ = uas.accept()
            except socket.timeout:
                continue
            threading.Thread(target=conn_loop, args=(c,), daemon=True).start()
else:
    uas = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); uas.bind((LIP, 0))
    UASP = uas.getsockname()[1]
    def uas_loop():
        uas.settimeout(0.2)
        while not stop:
            try:
                data, src = uas.recvfrom(65535)
            except socket.timeout:
                continue
            uas_handle(data, lambda b, src=src: uas.sendto(b, src))

t = threading.Thread(target=uas_loop, daemon=True); t.start()

# ---------------------------------------------------------------- UAC helpers
def md5(s):
    return hashlib.md5(s.encode()).hexdigest()

def digest_header(chal_hdrs, user, method, uri):
    """Authorization value answering the MD5 challenge among chal_hdrs"""
    chal = None
    for c in chal_hdrs:
        if "sha-256" not in c.lower():
            chal = c; break
    if chal is None:
        return None
    params = {}
    for part in chal[chal.lower().find("digest") + 6:].split(","):
        k, _, v = part.strip().partition("=")
        params[k.strip().lower()] = v.strip().strip('"')
    realm, nonce = params.get("realm", ""), params.get("nonce", "")
    ha1 = md5("%s:%s:%s" % (user, realm, a.password)); ha2 = md5("%s:%s" % (method, uri))
    out = 'Digest username="%s", realm="%s", nonce="%s", uri="%s", algorithm=MD5' % (user, realm, nonce, uri)
    if "auth" in [q.strip() for q in params.get("qop", "").split(",")]:
        cn = "%x" % random.getrandbits(32)
        resp = md5("%s:%s:00000001:%s:auth:%s" % (ha1, nonce, cn, ha2))
        out += ', response="%s", qop=auth, nc=00000001, cnonce="%s"' % (resp, cn)
    else:
        out += ', response="%s"' % md5("%s:%s:%s" % (ha1, nonce, ha2))
    if "opaque" in params:
        out += ', opaque="%s"' % params["opaque"]
    return out

def transact(msg, callid, cseq_method, conn=None):
    """send msg, wait for the final response to (callid, method); retransmit at
    500 ms over UDP.  Returns (code, hdrs) or (None, None) on timeout."""
    uac = conn or globals()["uac"]
    uac.send(msg)
    deadline = time.time() + a.timeout
    nxt = time.time() + 0.5 if not TCP else deadline
    while True:
        try:
            data = uac.recv(max(0.001, min(deadline, nxt) - time.time()))
        except socket.timeout:
            if time.time() >= deadline:
                return None, None
            uac.send(msg); nxt = time.time() + 0.5
            continue
        first, hdrs, _ = parse(data)
        if not first.startswith("SIP/2.0"):
            continue
        if h(hdrs, "call-id")[:1] != [callid] or not h(hdrs, "cseq")[0].endswith(cseq_method):
            continue
        code = int(first.split()[1])
        if code < 200:
            continue
        return code, hdrs

def via(port=None):
    return "Via: SIP/2.0/%s %s:%d;branch=%s;rport\r\n" % (VIA_T, LIP, port or UACP, br())

def register(user, contact_port, expires=3600, conn=None):
    cid = "%x@probe" % random.getrandbits(64)
    ftag = "%x" % random.getrandbits(32)
    ruri = "sip:%s:%d" % (thost, tport)
    def msg(cseq, auth):
        return ("REGISTER %s SIP/2.0\r\n%sMax-Forwards: 70\r\n"
                "From: <sip:%s@%s>;tag=%s\r\nTo: <sip:%s@%s>\r\nCall-ID: %s\r\nCSeq: %d REGISTER\r\n%s"
                "Contact: <sip:%s@%s:%d%s>\r\nExpires: %d\r\nContent-Length: 0\r\n\r\n") % (
            ruri, via(conn.port if conn else None), user, thost, ftag, user, thost, cid, cseq, auth,
            user, LIP, contact_port, TP, expires)
    t0 = time.perf_counter_ns()
    code, hdrs = transact(msg(1, ""), cid, "REGISTER", conn)
    if code == 401 and a.password:
        ah = digest_header(h(hdrs, "www-authenticate"), user, "REGISTER", ruri)
        if ah:
            code, hdrs = transact(msg(2, "Authorization: %s\r\n" % ah), cid, "REGISTER", conn)
    t1 = time.perf_counter_ns()
    return (t1 - t0) / 1000.0 if code == 200 else None

def call():
    cid = "%x@probe" % random.getrandbits(64)
    ftag = "%x" % random.getrandbits(32)
    sdp = "v=0\r\no=- 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n" % (LIP, LIP)
    frm = "<sip:%s@%s>;tag=%s" % (a.caller, thost, ftag)
    to = "<sip:%s@%s>" % (CALLEE, thost)
    iruri = "sip:%s@%s:%d" % (CALLEE, thost, tport)
    def inv(cseq, auth):
        v = via()
        return v, ("INVITE %s SIP/2.0\r\n%sMax-Forwards: 70\r\n"
                   "From: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d INVITE\r\n%sContact: <sip:%s@%s:%d%s>\r\n"
                   "Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s") % (
            iruri, v, frm, to, cid, cseq, auth, a.caller, LIP, UACP, TP, len(sdp), sdp)
    t0 = time.perf_counter_ns()
    v1, m1 = inv(1, "")
    code, hdrs = transact(m1, cid, "INVITE")
    cseq = 1
    if code in (401, 407) and a.password:
        # ACK the challenge (same branch as the INVITE), then retry with credentials
        uac.send(("ACK %s SIP/2.0\r\n%sMax-Forwards: 70\r\nFrom: %s\r\nTo: %s\r\nCall-ID: %s\r\n"
                  "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n") % (iruri, v1, frm, h(hdrs, "to")[0], cid))
        hname, aname = (("proxy-authenticate", "Proxy-Authorization") if code == 407
                        else ("www-authenticate", "Authorization"))
        ah = digest_header(h(hdrs, hname), a.caller, "INVITE", iruri)
        if ah:
            cseq = 2
            code, hdrs = transact(inv(2, "%s: %s\r\n" % (aname, ah))[1], cid, "INVITE")
    t1 = time.perf_counter_ns()
    if code != 200:
        return None, None
    rt_inv = (t1 - t0) / 1000.0
    to_hdr = h(hdrs, "to")[0]
    rr = [x.strip() for v in h(hdrs, "record-route") for x in v.split(",")]
    routes = list(reversed(rr))
    ruri = uri_of(h(hdrs, "contact")[0])
    rh = "".join("Route: %s\r\n" % r for r in routes)
    ack = ("ACK %s SIP/2.0\r\n%s%sMax-Forwards: 70\r\nFrom: %s\r\n"
           "To: %s\r\nCall-ID: %s\r\nCSeq: %d ACK\r\nContent-Length: 0\r\n\r\n") % (
        ruri, via(), rh, frm, to_hdr, cid, cseq)
    uac.send(ack)
    bye = ("BYE %s SIP/2.0\r\n%s%sMax-Forwards: 70\r\nFrom: %s\r\n"
           "To: %s\r\nCall-ID: %s\r\nCSeq: %d BYE\r\nContent-Length: 0\r\n\r\n") % (
        ruri, via(), rh, frm, to_hdr, cid, cseq + 1)
    t2 = time.perf_counter_ns()
    code, _ = transact(bye, cid, "BYE")
    t3 = time.perf_counter_ns()
    return rt_inv, ((t3 - t2) / 1000.0 if code == 200 else None)

def summary(name, xs, n):
    ok = [x for x in xs if x is not None]
    if not ok:
        print("%s n=0 failed=%d" % (name, n)); return
    ok.sort()
    q = lambda p: ok[min(len(ok) - 1, int(p * len(ok)))]
    print("%s n=%d failed=%d mean=%.0f p50=%.0f p90=%.0f p99=%.0f max=%.0f (us)" % (
        name, len(ok), n - len(ok), statistics.mean(ok), q(.5), q(.9), q(.99), ok[-1]))

# over TCP the callee registers through a connection of its own that it then
# closes (as the SIPp callee does), so the proxy connects to its Contact
reg_conn = TcpUac() if TCP else None
if register(CALLEE, UASP, conn=reg_conn) is None:
    sys.exit("callee registration failed")
if reg_conn:
    reg_conn.s.close()
regs, invs, byes = [], [], []
run = "%04x" % random.getrandbits(16)
for i in range(a.n):
    if a.password:
        regs.append(register(a.reg_user, UACP, expires=60))
    else:
        regs.append(register("probe%s_%d" % (run, i), UACP, expires=60))
    time.sleep(a.gap_ms / 1000)
for i in range(a.n):
    ri, rb = call()
    invs.append(ri); byes.append(rb)
    time.sleep(a.gap_ms / 1000)
stop = True
summary("probe register_us", regs, a.n)
summary("probe invite_200_us", invs, a.n)
summary("probe bye_200_us", byes, a.n)
