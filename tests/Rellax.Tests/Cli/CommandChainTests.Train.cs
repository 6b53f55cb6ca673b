using NUnit.Framework;

namespace Rellax.Tests.Cli;

public sealed partial class CommandChainTests
{
    /// <summary><c>rellax train</c> interrupted just before its folder is renamed into place: nothing new is left.</summary>
    [Test]
    public void TrainIntoANewFolder() =>
        AssertCancelledCleanly(SigInt, "output", "train", "--data", _prepared, "--k", "2", "--retrieval", "recent", "--steps", "1", "--template", "none",
            "--output", Path.Combine(_dir, "adapter-new"), "--threads", "1");
}
