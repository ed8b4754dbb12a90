//! Unit tests of [`super`] (kept apart to keep the module readable).

use super::*;
use infermesh_mesh::NodeRecord;

fn cfg(id: &str, cmd: &str) -> WakeableConfig {
    WakeableConfig {
        id: id.into(),
        provider: "test".into(),
        models: vec!["big".into()],
        vram_gb: 80.0,
        wake_command: WakeCommand::Shell(cmd.into()),
        node_name: None,
        grace_s: 5,
        timeout_s: 2,
    }
}

fn peer(name: &str) -> PeerView {
    PeerView {
        record: NodeRecord {
            node_id: format!("id-{name}"),
            name: name.into(),
            ..NodeRecord::default()
        },
        gossip_addr: "127.0.0.1:1".parse().unwrap(),
        public_key: [0; 32],
        generation: 1,
        last_seen_ms: 0,
        state: infermesh_state::NodeState::Client,
    }
}

#[test]
fn the_state_machine_is_total_and_as_specified() {
    use WakeEvent as E;
    use WakeState as S;
    let cases = [
        (S::Sleeping, E::Wake, Step::To(S::Waking)),
        (S::Failed, E::Wake, Step::To(S::Waking)),
        (S::Waking, E::Wake, Step::Refuse(WakeRefusal::AlreadyWaking)),
        (S::Joined, E::Wake, Step::Refuse(WakeRefusal::AlreadyJoined)),
        (S::Waking, E::CommandSucceeded, Step::Stay),
        (S::Waking, E::CommandFailed, Step::To(S::Failed)),
        (S::Waking, E::GraceExpired, Step::To(S::Failed)),
        (S::Sleeping, E::CommandFailed, Step::Stay),
        (S::Failed, E::GraceExpired, Step::Stay),
        (S::Sleeping, E::PeerJoined, Step::To(S::Joined)),
        (S::Waking, E::PeerJoined, Step::To(S::Joined)),
        (S::Failed, E::PeerJoined, Step::To(S::Joined)),
        (S::Joined, E::PeerJoined, Step::Stay),
        (S::Joined, E::PeerGone, Step::To(S::Sleeping)),
        (S::Waking, E::PeerGone, Step::Stay),
        (S::Joined, E::CommandFailed, Step::Stay),
    ];
    for (from, ev, want) in cases {
        assert_eq!(next_state(from, ev), want, "{from:?} + {ev:?}");
    }
    // Nothing but a wake leaves `sleeping` except its node appearing.
    for ev in [
        E::CommandSucceeded,
        E::CommandFailed,
        E::GraceExpired,
        E::PeerGone,
    ] {
        assert_eq!(next_state(S::Sleeping, ev), Step::Stay);
    }
}

#[test]
fn config_parses_both_command_forms_with_defaults() {
    let toml_text = r#"
        [[wakeable]]
        id = "gpu-7"
        provider = "example"
        models = ["llama-70b"]
        vram_gb = 80
        wake_command = "echo hi"

        [[wakeable]]
        id = "gpu-8"
        provider = "example"
        wake_command = ["/bin/echo", "hi"]
        node_name = "box-8"
        grace_s = 10
        timeout_s = 3
    "#;
    #[derive(Deserialize)]
    struct F {
        wakeable: Vec<WakeableConfig>,
    }
    let f: F = toml::from_str(toml_text).unwrap();
    assert_eq!(f.wakeable[0].grace_s, DEFAULT_GRACE_S);
    assert_eq!(f.wakeable[0].timeout_s, DEFAULT_TIMEOUT_S);
    assert_eq!(f.wakeable[0].expected_node(), "gpu-7");
    assert_eq!(
        f.wakeable[0].wake_command,
        WakeCommand::Shell("echo hi".into())
    );
    assert_eq!(
        f.wakeable[1].wake_command,
        WakeCommand::Argv(vec!["/bin/echo".into(), "hi".into()])
    );
    assert_eq!(f.wakeable[1].expected_node(), "box-8");
    validate(&f.wakeable).unwrap();
}

#[test]
fn validation_names_the_problem() {
    let mut dup = vec![cfg("a", "true"), cfg("a", "true")];
    assert!(validate(&dup).unwrap_err().contains("twice"));
    dup.pop();
    dup[0].id = "a b".into();
    assert!(validate(&dup).unwrap_err().contains("`id`"));
    let mut c = cfg("a", " ");
    assert!(validate(&[c.clone()]).unwrap_err().contains("wake_command"));
    c.wake_command = WakeCommand::Argv(vec![]);
    assert!(validate(&[c.clone()]).unwrap_err().contains("wake_command"));
    c = cfg("a", "true");
    c.timeout_s = 0;
    assert!(validate(&[c]).unwrap_err().contains("positive"));
}

#[test]
fn inventory_transitions_and_stale_reports() {
    let inv = Inventory::new(&[cfg("w", "true")], None, "127.0.0.1:1");
    assert_eq!(inv.list()[0].state, WakeState::Sleeping);
    let (v, job) = inv.begin_wake("w", 1_000).unwrap();
    assert_eq!(v.state, WakeState::Waking);
    assert_eq!(v.since_ms, 1_000);
    assert!(matches!(
        inv.begin_wake("w", 1_001),
        Err(WakeError::Refused(WakeRefusal::AlreadyWaking, _))
    ));
    assert!(matches!(inv.begin_wake("x", 1), Err(WakeError::Unknown(_))));
    // Success of the command keeps it waking until the node shows up.
    inv.command_finished("w", job.attempt, Ok(()), 1_500);
    assert_eq!(inv.get("w").unwrap().state, WakeState::Waking);
    // Grace (5 s) not over yet, then over.
    inv.observe(&[], 6_000);
    assert_eq!(inv.get("w").unwrap().state, WakeState::Waking);
    inv.observe(&[], 6_001);
    let f = inv.get("w").unwrap();
    assert_eq!(f.state, WakeState::Failed);
    assert!(f
        .reason
        .unwrap()
        .contains("has not joined the mesh within 5s"));
    // Retry; a late failure report of the first attempt changes nothing.
    let (_, job2) = inv.begin_wake("w", 7_000).unwrap();
    inv.command_finished("w", job.attempt, Err("old".into()), 7_001);
    assert_eq!(inv.get("w").unwrap().state, WakeState::Waking);
    inv.command_finished("w", job2.attempt, Err("exit 3".into()), 7_002);
    let f = inv.get("w").unwrap();
    assert_eq!(
        (f.state, f.reason.as_deref()),
        (WakeState::Failed, Some("exit 3"))
    );
    // Its node appears (by name = id): joined, and off the list.
    inv.observe(&[peer("w")], 8_000);
    assert_eq!(inv.get("w").unwrap().state, WakeState::Joined);
    assert!(inv.list().is_empty());
    assert_eq!(inv.all().len(), 1);
    assert!(matches!(
        inv.begin_wake("w", 8_001),
        Err(WakeError::Refused(WakeRefusal::AlreadyJoined, _))
    ));
    // It leaves: sleeping capacity again.
    inv.observe(&[peer("other")], 9_000);
    let s = inv.get("w").unwrap();
    assert_eq!((s.state, s.reason), (WakeState::Sleeping, None));
}

#[test]
fn node_name_is_what_joins() {
    let mut c = cfg("gpu-1", "true");
    c.node_name = Some("box-1".into());
    let inv = Inventory::new(&[c], None, "a");
    inv.observe(&[peer("gpu-1")], 1);
    assert_eq!(inv.get("gpu-1").unwrap().state, WakeState::Sleeping);
    inv.observe(&[peer("box-1")], 2);
    assert_eq!(inv.get("gpu-1").unwrap().state, WakeState::Joined);
}

fn job(cmd: WakeCommand, timeout_ms: u64) -> WakeJob {
    WakeJob {
        id: "w".into(),
        attempt: 1,
        command: cmd,
        timeout: Duration::from_millis(timeout_ms),
        env: vec![("INFERMESH_WAKEABLE_ID".into(), "w".into())],
    }
}

#[tokio::test]
async fn commands_succeed_fail_and_time_out() {
    let sh = |s: &str| WakeCommand::Shell(s.into());
    assert_eq!(
        run_command(&job(sh("test \"$INFERMESH_WAKEABLE_ID\" = w"), 5_000)).await,
        Ok(())
    );
    let err = run_command(&job(
        sh("echo starting; echo 'no such machine' >&2; exit 3"),
        5_000,
    ))
    .await
    .unwrap_err();
    assert_eq!(err, "wake command exited with status 3: no such machine");
    let started = std::time::Instant::now();
    let err = run_command(&job(sh("sleep 30"), 300)).await.unwrap_err();
    assert!(err.starts_with("wake command timed out"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = run_command(&job(
        WakeCommand::Argv(vec!["/nonexistent/wake".into()]),
        1_000,
    ))
    .await
    .unwrap_err();
    assert!(err.contains("cannot run wake command"), "{err}");
    // A background process holding the pipes does not keep the wake running.
    let started = std::time::Instant::now();
    assert_eq!(
        run_command(&job(sh("sleep 20 & echo started"), 5_000)).await,
        Ok(())
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_wake_runs_to_joined_or_failed() {
    let inv = Arc::new(Inventory::new(
        &[cfg("ok", "true"), cfg("bad", "echo boom >&2; false")],
        None,
        "a",
    ));
    let (_, j) = inv.begin_wake("bad", now_ms()).unwrap();
    run_wake(inv.clone(), j, Vec::new).await;
    let b = inv.get("bad").unwrap();
    assert_eq!(b.state, WakeState::Failed);
    assert_eq!(
        b.reason.as_deref(),
        Some("wake command exited with status 1: boom")
    );
    let (_, j) = inv.begin_wake("ok", now_ms()).unwrap();
    run_wake(inv.clone(), j, || vec![peer("ok")]).await;
    assert_eq!(inv.get("ok").unwrap().state, WakeState::Joined);
}
