complete -c tcpcopy -s x -l transfer -d 'Transfer rules: [online_ip:]online_port-target_ip:target_port[,...]' -r
complete -c tcpcopy -s s -l intercept -d 'Intercept servers: ip[:port][,...] (port defaults to -p)' -r
complete -c tcpcopy -s c -l fake-client -d 'Fake client addresses: ip[,ip...], a.b.c.x for the /24, or a CIDR (IPv4 /16-/32, IPv6 /112-/128)' -r
complete -c tcpcopy -l interface -d 'Capture interface (default: all interfaces)' -r
complete -c tcpcopy -s i -d 'Capture interface, or a pcap/pcapng file to replay offline (an existing file)' -r
complete -c tcpcopy -l input -d 'Mirrored input, on a collector host: read the packets a mirror session sends, `vxlan[:PORT]` (AWS, Azure; 4789), `geneve[:PORT]` (6081) or `erspan` (GRE), and replicate the mirrored traffic as if captured' -r
complete -c tcpcopy -l mirror-id -d 'Mirrored input: take only these VXLAN/Geneve VNIs or ERSPAN session IDs (default: all)' -r
complete -c tcpcopy -s a -l accelerate -d 'Offline replay: play the file this many times faster than it was recorded' -r
complete -c tcpcopy -l max-gap -d 'Offline replay: pauses in the recording longer than S seconds are shortened to S (and counted), as tcpreplay\'s --maxsleep' -r
complete -c tcpcopy -s I -l skip-gaps -d 'Offline replay: pauses in the recording longer than MS milliseconds are skipped (and counted), as C TCPCopy\'s -I' -r
complete -c tcpcopy -s T -l loop -d 'Offline replay: play the file N times, one pass after the other (C TCPCopy\'s -T)' -r
complete -c tcpcopy -l record -d 'Live: also write every captured client packet to this pcapng file (replayable with -i)' -r -F
complete -c tcpcopy -s t -l session-timeout -d 'Session timeout in seconds: a session whose target leaves a request unanswered (or that holds client bytes) this long is reset and forgotten' -r
complete -c tcpcopy -s k -l idle-timeout -d 'Idle timeout in seconds: a session with nothing outstanding, idle between requests, is reset and forgotten after this long (C TCPCopy\'s -k; default: the session timeout)' -r
complete -c tcpcopy -s D -l mss -d 'Largest TCP payload sent to the target' -r
complete -c tcpcopy -s M -l mtu -d 'MTU of the path to the target' -r
complete -c tcpcopy -s R -l rtt -d 'Initial retransmission timeout in milliseconds (before an RTT was measured)' -r
complete -c tcpcopy -l response-wait -d 'Milliseconds to wait for the target\'s answer before sending the next request anyway' -r
complete -c tcpcopy -s C -l connections -d 'Connections to each intercept (per capture thread)' -r
complete -c tcpcopy -l threads -d 'Capture threads: the kernel spreads client connections over them by flow hash (PACKET_FANOUT), each with its own sessions, sender and intercept connections' -r
complete -c tcpcopy -s p -l port -d 'Default intercept port' -r
complete -c tcpcopy -l secret-file -d 'Prove this secret to the intercepts and encrypt the channel to them (a file readable by its owner only, read once at start; the intercepts need the same file)' -r -F
complete -c tcpcopy -s n -l copies -d 'Replicate each session N times (each copy a distinct session at the target)' -r
complete -c tcpcopy -l port-shift -d 'Copy k of a session uses the client port shifted by k times this' -r
complete -c tcpcopy -s f -l instance -d 'This instance\'s number (C TCPCopy\'s -f): every session\'s client port is shifted by F × 2048, so that tcpcopy instances with different numbers replicating the same clients to one target do not collide (0: no shift)' -r
complete -c tcpcopy -s H -l localhost-as -d 'Source address for clients on the loopback network, which the target cannot answer (C TCPCopy\'s -H); -c takes precedence' -r
complete -c tcpcopy -s B -l capture-buffer -d 'Capture ring size in MB, per capture thread (C TCPCopy\'s -B; default 64)' -r
complete -c tcpcopy -s U -d 'C TCPCopy\'s session pool size: accepted and ignored (sessions are allocated as needed)' -r
complete -c tcpcopy -s S -d 'C TCPCopy\'s snap length: refused (every byte must reach the target)' -r
complete -c tcpcopy -s r -l percent -d 'Replicate this percentage of client connections (whole connections, the same ones every run)' -r
complete -c tcpcopy -s m -l memory -d 'Memory cap in MB for the sessions (2 KiB each) and the client data they hold for the target; one session may hold a quarter. Half-open sessions (handshake not completed online) are shed first; then a session that would pass either is dropped and counted as overflow' -r
complete -c tcpcopy -s l -l log -d 'Log file (default: stderr)' -r -F
complete -c tcpcopy -s P -l pid-file -d 'Pid file' -r -F
complete -c tcpcopy -l log-format -d 'Log lines as text, or as JSON objects (one per line; the statistics as fields)' -r -f -a "text\t''
json\t''"
complete -c tcpcopy -l send-layer -d 'How packets reach the target: `ip` (the default) lets the kernel route every packet (raw socket: netfilter OUTPUT/POSTROUTING, IPsec policies and mark-based routing apply); `link` hands IPv4 packets straight to the device with the next hop\'s hardware address (looked up once per destination and checked every second), skipping all of those, for less CPU' -r -f -a "ip\t'Raw IP socket: the kernel routes every packet'
link\t'`AF_PACKET` to the next hop, routed where that cannot be done'"
complete -c tcpcopy -s o -l output-device -d 'Send at the link layer (as --send-layer link), only through this device; packets routed out of another device are routed by the kernel' -r
complete -c tcpcopy -l capture-wait -d 'Longest a captured packet waits before it is replicated, in ms (1-50): the kernel hands the capture over in blocks at least this often. Longer waits make larger batches and cost less CPU per request' -r
complete -c tcpcopy -l stats-interval -d 'Seconds between statistics lines in the log (0: only at exit)' -r
complete -c tcpcopy -l duration -d 'Stop after this many seconds (0: run until SIGINT/SIGTERM)' -r
complete -c tcpcopy -s F -l filter -d 'Capture only what this tcpdump expression (pcap-filter(7)) also matches, e.g. \'not host 198.18.0.7\': it narrows the capture tcpcopy sets up from -x, in the kernel' -r
complete -c tcpcopy -l compare-bytes -d 'First bytes of each answer intercept forwards and the comparison keeps (16-65535)' -r
complete -c tcpcopy -l ignore-header -d 'HTTP header left out of the comparison, added to the defaults (Date, Server, Age, Expires, Last-Modified, ETag, Set-Cookie, X-Request-Id, Keep-Alive, Connection); `-NAME` compares a default one again' -r
complete -c tcpcopy -l baseline -d 'A second target running production\'s version, fed the same sessions: differences it shows as well are reported as noise, not as regressions' -r
complete -c tcpcopy -l report -d 'Write the JSON report here at exit (schema: docs/report.schema.json)' -r -F
complete -c tcpcopy -l report-html -d 'Write a self-contained HTML report here at exit' -r -F
complete -c tcpcopy -l fail-on-diff -d 'Exit with status 3 when more than PCT % of the compared requests differ' -r
complete -c tcpcopy -l fail-on-loss -d 'Exit with status 3 when more than PCT % of the online requests were lost' -r
complete -c tcpcopy -l metrics -d 'Serve Prometheus metrics on ADDR:PORT (GET /metrics)' -r
complete -c tcpcopy -l protocol -d 'The sessions\' protocol, when their login must be made again for the target: `mysql` (MySQL, MariaDB) answers the target\'s own greeting (its salt) with the password --login gives for the client\'s user, `postgres` (PostgreSQL) the target\'s own SCRAM-SHA-256, md5 or password request; both log sessions open before tcpcopy started in, and skip sessions that use TLS; `auto` does so for the sessions found to be MySQL or PostgreSQL (from the client\'s first packet or the target\'s greeting) and leaves the others as bytes' -r
complete -c tcpcopy -l login -d 'Log in at the target as USER with PASSWORD (repeatable); without a password for its user, a session\'s own login goes (which only a target that checks no passwords takes). Prefer --login-file: a command line is visible to every local user' -r
complete -c tcpcopy -l login-file -d 'Read --login entries from FILE, one USER:PASSWORD a line (# starts a comment)' -r -F
complete -c tcpcopy -l mode -d '`packet` (the default) sends forged packets with the clients\' addresses and reads the answers from intercept; `stream` replays each session over a TCP connection from this host (no intercept, no route, no root on the target; passes NAT; the target sees this host as the client, unless --proxy-protocol)' -r -f -a "packet\t'Packets with the clients\' addresses, answers caught by intercept'
stream\t'A TCP connection from this host per session: no intercept, passes NAT'"
complete -c tcpcopy -l target-ca -d 'Stream mode with TLS: trust these certificate authorities (PEM file) instead of the Mozilla roots' -r -F
complete -c tcpcopy -l target-sni -d 'Stream mode with TLS: the server name to ask for and check the certificate against (default: the target\'s IP address)' -r
complete -c tcpcopy -l config -d 'Read options from this TOML file (keys: the long option names, e.g. `copies = 2`); the command line overrides it' -r -F
complete -c tcpcopy -s W -l no-wait -d 'Don\'t wait for the target\'s response before sending the next request'
complete -c tcpcopy -s O -l only-full-sessions -d 'Replicate only sessions whose handshake was captured, not those already open when tcpcopy started (C TCPCopy\'s -O)'
complete -c tcpcopy -s g -l gradual -d 'Start with 1 % of the connections and take one point more each second, up to -r (C TCPCopy\'s -g)'
complete -c tcpcopy -s L -l lonely -d 'Keep replicating while an intercept is unreachable (C TCPCopy\'s -L; always the case here: tcpcopy reconnects and goes on)'
complete -c tcpcopy -s d -l daemon -d 'Run in the background, once started (as C TCPCopy\'s -d); without -l, the log goes to /var/log/PROGRAM.log'
complete -c tcpcopy -l debug -d 'Debug logging'
complete -c tcpcopy -l compare -d 'Compare the target\'s answers with the online server\'s (captured too): HTTP/1.x by status, headers and body, any other protocol by digest and first bytes'
complete -c tcpcopy -l proxy-protocol -d 'Stream mode: begin each connection with a PROXY protocol v2 header carrying the real client\'s address'
complete -c tcpcopy -l target-tls -d 'Stream mode: speak TLS to the target (rustls; the server\'s certificate is checked against the Mozilla roots, or --target-ca)'
complete -c tcpcopy -l target-insecure -d 'Stream mode with TLS: accept any certificate (test targets only: no protection against a man in the middle)'
complete -c tcpcopy -s v -l version -d 'Print version'
complete -c tcpcopy -l print-config -d 'Print the options in effect (file, command line and defaults) as a config file and exit'
complete -c tcpcopy -s h -l help -d 'Print help (see more with \'--help\')'
