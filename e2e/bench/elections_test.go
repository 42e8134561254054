package main

import "testing"

func TestLeadershipLine(t *testing.T) {
	for _, c := range []struct {
		line string
		want bool
	}{
		{`2026-11-27T05:25:28.183Z [WARN]  consensus.raft: Election timeout reached, restarting election`, true},
		{`2026-11-27T05:25:28.183Z [WARN]  consensus.raft: heartbeat timeout reached, starting election: last-leader-addr=10.0.0.1:7947`, true},
		{`2026-11-27T05:25:29.100Z [INFO]  consensus.raft: entering leader state: leader="Node at 10.0.0.2:7947 [Leader]"`, true},
		{`2026-11-27T05:25:29.100Z [WARN]  consensus: probe election: leader 10.0.0.1:7947 refused the connection`, true},
		{`2026-11-27T05:25:30.000Z [INFO]  kubelet: pod default/web-1 running`, false},
		{`2026-11-27T05:25:30.000Z [INFO]  kubelet: pod default/web-1 terminated`, false},
		{``, false},
	} {
		if got := leadershipLine(c.line); got != c.want {
			t.Errorf("leadershipLine(%q) = %v, want %v", c.line, got, c.want)
		}
	}
}
