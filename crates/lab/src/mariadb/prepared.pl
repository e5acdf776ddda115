# A MySQL client that prepares statements on the server (DBD::MariaDB with server-side
# prepares: COM_STMT_PREPARE, COM_STMT_EXECUTE, COM_STMT_CLOSE), driven by tab-separated lines
# on its standard input; "ok" on its standard output after each, "ready" once logged in.
#   prepare NAME SQL | execute NAME ARG... | close NAME
use strict;
use warnings;
use DBI;

$| = 1;
my ($host, $port, $user, $password, $database) = @ARGV;
my $dbh = DBI->connect(
    "DBI:MariaDB:database=$database;host=$host;port=$port;mariadb_server_prepare=1",
    $user, $password, { RaiseError => 1, PrintError => 0, AutoCommit => 1 });
my %statements;
print "ready\n";
while (my $line = <STDIN>) {
    chomp $line;
    my ($command, $name, @args) = split /\t/, $line;
    if ($command eq 'prepare') {
        $statements{$name} = $dbh->prepare($args[0]);
    } elsif ($command eq 'execute') {
        $statements{$name}->execute(@args);
    } elsif ($command eq 'close') {
        delete $statements{$name};
    } else {
        die "unknown command $command\n";
    }
    print "ok\n";
}
$dbh->disconnect;
