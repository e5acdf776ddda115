complete -c intercept -s i -l interface -d 'Assistant mode: capture interfaces dev[,dev] (default: all)' -r
complete -c intercept -l port -d 'Service port(s) whose responses to catch: port[,port] (required with -q; recommended in assistant mode, which otherwise ignores all TCP to or from the listen port)' -r
complete -c intercept -l queue-num -d 'NFQUEUE number for queue mode' -r
complete -c intercept -s p -l listen-port -d 'Listen port for tcpcopy connections' -r
complete -c intercept -s b -l bind -d 'Listen address' -r
complete -c intercept -s x -l allow -d 'Allowed tcpcopy hosts: ip[,ip] (default: any)' -r
complete -c intercept -l clock-offset-ms -d 'Testing: milliseconds added to every time this intercept reports (a host whose clock is off)' -r
complete -c intercept -l threads -d 'Capture threads per interface (assistant mode): the kernel spreads flows over them (PACKET_FANOUT)' -r
complete -c intercept -s n -l batch -d 'Responses batched per message at most (a batch also leaves at the end of each capture round)' -r
complete -c intercept -s t -l route-timeout -d 'Seconds a session route is kept without traffic' -r
complete -c intercept -s s -l hash-size -d 'Session hash size (accepted for compatibility; the table grows as needed)' -r
complete -c intercept -l metrics -d 'Prometheus endpoint: serve GET /metrics on this address' -r
complete -c intercept -s F -l filter -d 'Assistant mode: capture only responses this tcpdump expression (pcap-filter(7)) also matches, e.g. \'tcp and src port 80\', in the kernel' -r
complete -c intercept -s l -l log -d 'Log file (default: stderr)' -r -F
complete -c intercept -s P -l pid-file -d 'Pid file' -r -F
complete -c intercept -l log-format -d 'Log lines as text, or as JSON objects (one per line; the statistics as fields)' -r -f -a "text\t''
json\t''"
complete -c intercept -s q -l queue -d 'Queue mode: run on the target, divert its responses with an iptables NFQUEUE rule and drop them'
complete -c intercept -s d -l debug -d 'Debug logging'
complete -c intercept -s h -l help -d 'Print help'
complete -c intercept -s V -l version -d 'Print version'
