use super::*;

/// A correct assistant-mode setup: both probes answered, ip_forward off.
fn ready() -> Observations {
    Observations {
        intercept: "198.18.0.40:36524".parse().unwrap(),
        target: "198.18.0.30:80".parse().unwrap(),
        fake: "198.19.0.1".parse().unwrap(),
        fake_range: Some("198.19.0.0/24".into()),
        reach: Reach::Welcomed,
        tell: Some(CheckTell {
            mode: InterceptMode::Assistant,
            ip_forward: Some(false),
            rp_filter: Some(0),
            fake_route: FakeRoute::None,
            mtu: Some(1500),
            own_probe: OwnProbe::Sent,
        }),
        target_port: TargetPort::Open,
        ours_answered: Ok(true),
        theirs_answered: Some(true),
        local_mtu: Some(("eth0".into(), 1500)),
        mtu_option: 1500,
        gro: Some(("eth0".into(), false)),
    }
}

fn queue(route: FakeRoute, rp_filter: u8) -> Observations {
    let mut o = ready();
    o.intercept = "198.18.0.30:36524".parse().unwrap();
    o.tell = Some(CheckTell {
        mode: InterceptMode::Queue,
        ip_forward: Some(true),
        rp_filter: Some(rp_filter),
        fake_route: route,
        mtu: Some(1500),
        own_probe: OwnProbe::Failed,
    });
    o.theirs_answered = None;
    o
}

fn kinds(o: &Observations) -> Vec<Kind> {
    diagnose(o).iter().map(|f| f.kind).collect()
}

#[test]
fn a_correct_setup_is_ready() {
    let (ok, text) = verdict(&diagnose(&ready()));
    assert!(ok);
    assert_eq!(text, "ready\n");
    // On the target, ip_forward does not matter; a route out of another interface is fine
    // without strict rp_filter.
    assert_eq!(kinds(&queue(FakeRoute::OtherInterface, 0)), []);
    assert_eq!(kinds(&queue(FakeRoute::SameInterface, 1)), []);
}

#[test]
fn each_broken_setup_is_named_alone() {
    type Break = fn(&mut Observations);
    let cases: [(&str, Break, Kind); 9] = [
        (
            "intercept down",
            |o| {
                o.reach = Reach::Unreachable("connection refused".into());
                o.tell = None;
                o.ours_answered = Ok(false);
                o.theirs_answered = None;
            },
            Kind::InterceptUnreachable,
        ),
        (
            "another service",
            |o| {
                o.reach = Reach::NotIntercept("bad magic".into());
                o.tell = None;
            },
            Kind::NotIntercept,
        ),
        (
            "refused",
            |o| o.reach = Reach::Refused("not in --allow".into()),
            Kind::InterceptRefused,
        ),
        (
            "version",
            |o| o.reach = Reach::Version(9),
            Kind::InterceptVersion,
        ),
        (
            "ip_forward",
            |o| o.tell.as_mut().unwrap().ip_forward = Some(true),
            Kind::IpForward,
        ),
        (
            "no route at the target",
            |o| {
                o.ours_answered = Ok(false);
                o.theirs_answered = Some(false);
            },
            Kind::NoFakeRoute,
        ),
        (
            "forged dropped",
            |o| o.ours_answered = Ok(false),
            Kind::ForgedDropped,
        ),
        (
            "mtu here",
            |o| o.local_mtu = Some(("eth0".into(), 1400)),
            Kind::Mtu,
        ),
        (
            "target down",
            |o| {
                o.target_port = TargetPort::Closed("connection refused".into());
                o.ours_answered = Ok(false);
                o.theirs_answered = Some(false);
            },
            Kind::TargetClosed,
        ),
    ];
    for (name, broken, kind) in cases {
        let mut o = ready();
        broken(&mut o);
        let found = diagnose(&o);
        let problems: Vec<Kind> = found
            .iter()
            .map(|f| f.kind)
            .filter(|k| k.is_problem())
            .collect();
        assert_eq!(problems, [kind], "{name}: {found:?}");
        assert!(!verdict(&found).0, "{name}");
        assert!(!found[0].fix.is_empty());
    }
}

#[test]
fn on_the_target_its_route_and_rp_filter_are_judged() {
    let mut o = queue(FakeRoute::None, 0);
    o.ours_answered = Ok(false);
    assert_eq!(kinds(&o), [Kind::NoFakeRoute]);
    let mut o = queue(FakeRoute::OtherInterface, 1);
    o.ours_answered = Ok(false);
    assert_eq!(kinds(&o), [Kind::RpFilter]);
    // Loose rp_filter drops only what has no route at all.
    assert_eq!(kinds(&queue(FakeRoute::OtherInterface, 2)), []);
    // Route and rp_filter fine, yet no answer: dropped on the way.
    let mut o = queue(FakeRoute::SameInterface, 0);
    o.ours_answered = Ok(false);
    assert_eq!(kinds(&o), [Kind::ForgedDropped]);
    let f = &diagnose(&o)[0];
    assert!(f.fix.contains("--mode stream"), "{f}");
    // The target's own MTU towards this host.
    let mut o = queue(FakeRoute::SameInterface, 0);
    o.tell.as_mut().unwrap().mtu = Some(1280);
    assert_eq!(kinds(&o), [Kind::Mtu]);
}

#[test]
fn notes_do_not_stop_a_ready_setup() {
    let mut o = ready();
    o.gro = Some(("eth0".into(), true));
    o.tell = None;
    o.theirs_answered = None;
    let found = diagnose(&o);
    assert_eq!(
        found.iter().map(|f| f.kind).collect::<Vec<_>>(),
        [Kind::OldIntercept, Kind::Offload]
    );
    let (ok, text) = verdict(&found);
    assert!(ok && text.ends_with("ready\n"), "{text}");
    // Without a raw socket, the path is not probed: a note, and no verdict on the path.
    let mut o = ready();
    o.ours_answered = Err("cannot open a raw socket".into());
    assert_eq!(kinds(&o), [Kind::NoProbe]);
}

#[test]
fn an_unprovable_silence_names_both_causes() {
    let mut o = ready();
    o.ours_answered = Ok(false);
    o.theirs_answered = None;
    o.tell.as_mut().unwrap().own_probe = OwnProbe::Failed;
    let found = diagnose(&o);
    assert_eq!(
        found.iter().map(|f| f.kind).collect::<Vec<_>>(),
        [Kind::NoAnswer]
    );
    assert!(
        found[0]
            .fix
            .contains("ip route add 198.19.0.0/24 via 198.18.0.40"),
        "{}",
        found[0]
    );
    assert!(found[0].fix.contains("--mode stream"));
}

#[test]
fn the_fake_range_is_the_prefix_covering_it() {
    let addrs: Vec<IpAddr> = (1..=254).map(|i| IpAddr::from([198, 19, 0, i])).collect();
    assert_eq!(covering_prefix(&addrs).as_deref(), Some("198.19.0.0/24"));
    let one = [IpAddr::from([10, 1, 2, 3])];
    assert_eq!(covering_prefix(&one).as_deref(), Some("10.1.2.3/32"));
    assert_eq!(covering_prefix(&[]), None);
}
