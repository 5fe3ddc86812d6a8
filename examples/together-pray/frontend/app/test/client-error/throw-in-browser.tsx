"use client";

import { useEffect } from "react";

/** Throws an uncaught error once the page is up (after the layout's error tracking has started). */
export function ThrowInBrowser({ kind }: { kind: string }): null {
  useEffect(() => {
    const timer = setTimeout(() => {
      throw new Error(`vigil test browser error: ${kind}`);
    }, 500);
    return () => clearTimeout(timer);
  }, [kind]);
  return null;
}
