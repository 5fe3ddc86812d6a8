import { Controller, Get, NotFoundException, Query } from "@nestjs/common";

/**
 * Routes that exist only for vigil's own tests, where the env sets SANDBOX_TEST_ROUTES=1 (secrets/schema.yml
 * gives the sandbox alone); everywhere else they answer 404 like any unknown path.
 */
@Controller("test")
export class TestRoutesController {
  /** Throws an unhandled error, as a bug would: the error tracker must get it. `kind` names the error, so
   * a test can tell its own errors apart and see the same one group with itself. */
  @Get("error")
  fail(@Query("kind") kind = "default"): never {
    if (process.env.SANDBOX_TEST_ROUTES !== "1") {
      throw new NotFoundException();
    }
    const name = kind.replace(/[^A-Za-z0-9-]/g, "").slice(0, 40) || "default";
    throw new Error(`vigil test error: ${name}`);
  }
}
