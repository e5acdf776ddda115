//! `tcpcopy demo` and `tcpcopy bench`.

pub fn run_demo(_seconds: u64) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}

pub fn run_bench(_seconds: u64) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
