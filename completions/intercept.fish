complete -c intercept -s i -l interface -d 'Assistant mode: capture on these interfaces, dev[,dev] (`any`: all of them). Without -i, intercept runs in queue mode' -r
complete -c intercept -l port -d 'Service port(s) whose responses to catch: port[,port] (queue mode: intercept adds its NFQUEUE rule for them; assistant mode: narrows the capture, which otherwise ignores only TCP to or from the listen port)' -r
complete -c intercept -l queue-num -d 'NFQUEUE number for queue mode' -r
complete -c intercept -s q -l queue-length -d 'Queue mode: packets the kernel queues at most before it drops new ones (C intercept\'s -q)' -r
complete -c intercept -s x -l pass -d 'Queue mode: responses to these addresses pass (are neither dropped nor reported), e.g. a monitoring host\'s (C intercept\'s -x): ip[,ip]' -r
complete -c intercept -s D -d 'C intercept\'s docker address pairs: refused (run intercept in the container\'s network namespace instead)' -r
complete -c intercept -s p -l listen-port -d 'Listen port for tcpcopy connections' -r
complete -c intercept -s b -l bind -d 'Listen address' -r
complete -c intercept -l allow -d 'Allowed tcpcopy hosts: ip[,ip] (default: any)' -r
complete -c intercept -l secret-file -d 'Let in only a tcpcopy that proves this secret, and encrypt the channel (a file readable by its owner only, read once at start; tcpcopy needs the same file)' -r -F
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
complete -c intercept -l config -d 'Read options from this TOML file (keys: the long option names, e.g. `copies = 2`); the command line overrides it' -r -F
complete -c intercept -l queue -d 'Queue mode (the mode without -i): run on the target, read its responses from NFQUEUE and drop them. With --port, intercept adds the iptables rule itself (and removes it at exit); without, it reads the queue that the operator\'s rule fills (`iptables -I OUTPUT -p tcp --sport PORT -j NFQUEUE`)'
complete -c intercept -s d -l daemon -d 'Run in the background, once started (as C TCPCopy\'s -d); without -l, the log goes to /var/log/PROGRAM.log'
complete -c intercept -l debug -d 'Debug logging'
complete -c intercept -s v -l version -d 'Print version'
complete -c intercept -l print-config -d 'Print the options in effect (file, command line and defaults) as a config file and exit'
complete -c intercept -s h -l help -d 'Print help'
